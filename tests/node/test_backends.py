"""Device plug-ins load before discovery: --backend-module, SDC_BACKEND_MODULES, backend_modules.

Run against the ``testdev`` PrivateUse1 test backend with torch's own plug-in autoload off
(``TORCH_DEVICE_BACKEND_AUTOLOAD=0``), where ``testdev:0`` is otherwise not a device type.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sdc.node.backends import BackendModuleError, load_backend_modules, requested_modules
from tests.testdev import MODULE, load_or_skip, subprocess_env, why_unavailable

SDC = [sys.executable, "-m", "sdc"]


def test_flags_win_over_the_environment_which_wins_over_the_config_file():
    env = {"SDC_BACKEND_MODULES": "torch_npu, torch_mlu"}
    config = {"backend_modules": ["torch_musa"]}
    assert requested_modules(["a.b", "c"], env, config) == (["a.b", "c"], "--backend-module")
    assert requested_modules([], env, config) == (["torch_npu", "torch_mlu"], "SDC_BACKEND_MODULES")
    assert requested_modules([], {}, config) == (["torch_musa"], "config backend_modules")
    assert requested_modules([], {}, {}) == ([], "")


@pytest.mark.parametrize("name", ["torch npu", "1torch", "torch;rm -rf /", "a..b"])
def test_a_name_that_is_not_a_module_is_refused(name):
    with pytest.raises(BackendModuleError, match="not a Python module name"):
        requested_modules([name], {}, {})


def test_a_module_that_fails_to_import_names_itself_and_where_it_was_asked_for():
    with pytest.raises(BackendModuleError) as caught:
        load_backend_modules(["sdc_no_such_plugin"], "SDC_BACKEND_MODULES")
    assert str(caught.value) == (
        "backend module 'sdc_no_such_plugin' (from SDC_BACKEND_MODULES) failed to import: No module named 'sdc_no_such_plugin'"
    )


def test_discovery_counts_a_plugins_devices_and_reads_their_memory():
    load_or_skip()
    from sdc.node.devices import accelerator_backend, discover

    assert accelerator_backend() == "testdev"
    chips = discover()
    assert [c.name for c in chips] == ["testdev:0", "testdev:1"]
    assert [c.device for c in chips] == [torch.device("testdev", 0), torch.device("testdev", 1)]
    total = torch.testdev.mem_get_info(0)[1]
    assert all(c.chip.memory_bytes == total > 0 for c in chips)
    assert [c.chip.chip_id for c in chips] == [f"host:{chips[0].chip.host}:testdev:{i}" for i in (0, 1)]


def _sdc(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = subprocess_env(
        TORCH_DEVICE_BACKEND_AUTOLOAD="0", SDC_CONFIG="/dev/null", SDC_DATA_DIR=str(tmp_path),
        SDC_DATABASE_URL=f"sqlite:///{tmp_path / 'sdc.db'}",
    )
    environ.pop("SDC_BACKEND_MODULES", None)
    environ.update(env)
    return subprocess.run([*SDC, *args], capture_output=True, text=True, env=environ, timeout=600)


@pytest.fixture
def database(tmp_path):
    assert _sdc(tmp_path, "db", "upgrade").returncode == 0
    return tmp_path


def test_without_its_module_a_plugin_device_is_unknown_and_the_error_says_how_to_load_it(database):
    if why_unavailable():
        pytest.skip(why_unavailable())
    run = _sdc(database, "sweep", "--devices", "testdev:0")
    assert run.returncode == 2
    assert "'testdev' is not a PyTorch device type" in run.stderr and "--backend-module MODULE" in run.stderr
    assert "Traceback" not in run.stderr
    bad = _sdc(database, "sweep", "--backend-module", "sdc_no_such_plugin")
    assert bad.returncode == 2 and "backend module 'sdc_no_such_plugin' (from --backend-module) failed to import" in bad.stderr


@pytest.mark.slow
@pytest.mark.parametrize("how", ["flag", "env", "config"])
def test_a_sweep_loads_the_plugin_and_says_so(database, how):
    if why_unavailable():
        pytest.skip(why_unavailable())
    args, env = ["--json", "sweep", "--probes", "transfer", "--devices", "testdev:1"], {}
    if how == "flag":
        args += ["--backend-module", MODULE]
        source = "--backend-module"
    elif how == "env":
        env["SDC_BACKEND_MODULES"] = MODULE
        source = "SDC_BACKEND_MODULES"
    else:
        config = database / "config.toml"
        config.write_text(f'backend_modules = ["{MODULE}"]\n')
        env["SDC_CONFIG"] = str(config)
        source = "config backend_modules"
    run = _sdc(database, *args, **env)
    assert run.returncode == 0, run.stderr
    assert f"loaded backend module {MODULE} (registered device type 'testdev'; from {source})" in run.stderr
    result = json.loads(run.stdout)
    assert result["backend_modules"] == [MODULE]
    assert [c["name"] for c in result["chips"]] == ["testdev:1"]
    assert result["chips"][0]["statuses"].get("ok", 0) >= 1


def test_the_config_key_must_be_a_list_of_names(tmp_path):
    from sdc.config import ConfigError, load_settings

    config = tmp_path / "config.toml"
    config.write_text('backend_modules = "torch_npu"\n')
    with pytest.raises(ConfigError, match=r"'backend_modules' in .* must be a list of names"):
        load_settings(config_path=config, environ={})
    config.write_text('backend_modules = ["torch_npu", "torch_mlu"]\n')
    settings = load_settings(config_path=config, environ={})
    assert requested_modules([], {}, settings.tables) == (["torch_npu", "torch_mlu"], "config backend_modules")
