# Two things pyproject.toml cannot say declaratively:
# - migrations/ sits at the repository root, where Alembic users look for it, yet must ship
#   inside the wheel as sdc.migrations so a plain wheel install can upgrade a database;
#   setuptools cannot combine package discovery with such a mapping in [tool.setuptools].
# - the CPU digest kernel is a C extension built with the package. optional=True: where no
#   C compiler exists the install still succeeds and digests take the eager torch path.
from setuptools import Extension, find_packages, setup

setup(
    packages=find_packages(include=["sdc", "sdc.*", "probes", "probes.*"])
    + ["sdc.migrations", "sdc.migrations.versions"],
    package_dir={"sdc.migrations": "migrations"},
    ext_modules=[
        Extension(
            "sdc.digest._native",
            sources=["sdc/digest/kernels/digest.c", "sdc/digest/kernels/magnitude.c"],
            extra_compile_args=["-O3", "-std=c99"],
            optional=True,
        )
    ],
)
