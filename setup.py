# Package list lives here (not in pyproject.toml) because migrations/ sits at the repository
# root, where Alembic users look for it, yet must ship inside the wheel as sdc.migrations so a
# plain wheel install can upgrade a database. setuptools cannot combine package discovery with
# such a mapping declaratively.
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["sdc", "sdc.*", "probes", "probes.*"])
    + ["sdc.migrations", "sdc.migrations.versions"],
    package_dir={"sdc.migrations": "migrations"},
)
