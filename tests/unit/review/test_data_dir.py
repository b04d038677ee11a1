"""The review role's data directory is created with its parents (a fresh clone has none)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_router.errors import ConfigError
from stream_router.review_role import faust_app
from stream_router.settings import Settings


def test_a_missing_parent_of_the_data_dir_is_created(tmp_path: Path) -> None:
    data_dir = tmp_path / ".stream-router" / "review-data"
    faust_app(Settings.model_validate({"review": {"data_dir": str(data_dir)}}))
    assert data_dir.is_dir()


def test_an_unwritable_data_dir_names_the_setting(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    settings = Settings.model_validate({"review": {"data_dir": str(blocker / "review-data")}})
    with pytest.raises(ConfigError, match=r"review\.data_dir.*STREAM_ROUTER_REVIEW__DATA_DIR"):
        faust_app(settings)
