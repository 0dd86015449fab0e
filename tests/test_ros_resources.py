"""Locating config/, models/, launch/ in the source checkout and in an ament install
(dynaflip_ros/resources.py; ROS-free)."""
from pathlib import Path

import pytest

from dynaflip_ros import resources

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def no_share_env(monkeypatch):
    monkeypatch.delenv(resources.SHARE_ENV, raising=False)
    monkeypatch.delenv("AMENT_PREFIX_PATH", raising=False)


def make_ament_prefix(tmp_path: Path) -> Path:
    """A fake colcon install prefix: ament resource marker + share/dynaflip_ros/{config,launch}."""
    prefix = tmp_path / "install"
    (prefix / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (prefix / "share" / "ament_index" / "resource_index" / "packages" / "dynaflip_ros").write_text("")
    share = prefix / "share" / "dynaflip_ros"
    for d in ("config", "launch", "models/encoder"):
        (share / d).mkdir(parents=True)
    (share / "config" / "pick_into_sink.yaml").write_text("{}\n")
    (share / "launch" / "pick_into_sink.launch.py").write_text("")
    return prefix


def test_source_checkout(no_share_env):
    assert resources.checkout_root() == ROOT
    assert resources.config_dir() == ROOT / "config"
    assert resources.launch_file("pick_into_sink") == ROOT / "launch" / "pick_into_sink.launch.py"
    assert resources.params_file("pick_into_sink") == ROOT / "config" / "pick_into_sink.yaml"


def test_ament_index_lookup(no_share_env, tmp_path, monkeypatch):
    prefix = make_ament_prefix(tmp_path)
    other = tmp_path / "other_prefix"  # a prefix without the package is skipped
    other.mkdir()
    monkeypatch.setenv("AMENT_PREFIX_PATH", f"{other}:{prefix}")
    assert resources.ament_share_dir() == prefix / "share" / "dynaflip_ros"
    # with no checkout (installed package), the ament share is what is found
    monkeypatch.setattr(resources, "checkout_root", lambda: None)
    assert resources.config_dir() == prefix / "share" / "dynaflip_ros" / "config"
    assert resources.models_dir() == prefix / "share" / "dynaflip_ros" / "models"
    monkeypatch.chdir(tmp_path)
    assert resources.resolve_path("models/encoder") == prefix / "share" / "dynaflip_ros" / "models" / "encoder"
    with pytest.raises(resources.ResourceNotFoundError, match="calibration"):
        resources.data_dir("calibration")
    with pytest.raises(resources.ResourceNotFoundError, match="available"):
        resources.launch_file("nope")


def test_override_env_wins(no_share_env, tmp_path, monkeypatch):
    share = make_ament_prefix(tmp_path) / "share" / "dynaflip_ros"
    monkeypatch.setenv(resources.SHARE_ENV, str(share))
    assert resources.search_roots()[0] == share
    assert resources.config_dir() == share / "config"


def test_resolve_path_prefers_working_directory(no_share_env, tmp_path, monkeypatch):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "pick_into_sink.yaml").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    assert resources.resolve_path("config/pick_into_sink.yaml") == tmp_path / "config" / "pick_into_sink.yaml"
    (tmp_path / "config" / "pick_into_sink.yaml").unlink()
    assert resources.resolve_path("config/pick_into_sink.yaml") == ROOT / "config" / "pick_into_sink.yaml"
    with pytest.raises(resources.ResourceNotFoundError, match="tried"):
        resources.resolve_path("no/such/thing")
    assert resources.resolve_path("no/such/thing", must_exist=False) == tmp_path / "no/such/thing"
    with pytest.raises(resources.ResourceNotFoundError):
        resources.resolve_path(tmp_path / "absent")
    with pytest.raises(ValueError):
        resources.data_dir("bin")
