"""The public API is exactly what ``watcher.__all__`` lists."""

from __future__ import annotations

import watcher


def test_all_names_exist_and_are_public() -> None:
    """Every name in __all__ exists, and every public module attribute is listed."""
    for name in watcher.__all__:
        assert hasattr(watcher, name), name
    public = {
        name
        for name, value in vars(watcher).items()
        if not name.startswith("_") and not getattr(value, "__file__", None)
    }
    assert public <= set(watcher.__all__) | {"annotations"}


def test_exported_classes_claim_the_package() -> None:
    """Classes are re-exported from private modules of this package only."""
    for name in watcher.__all__:
        value = getattr(watcher, name)
        module = getattr(value, "__module__", "watcher")
        assert module.startswith("watcher"), (name, module)


def test_errors_share_one_root() -> None:
    """Every exported exception derives from WatcherError."""
    errors = [
        getattr(watcher, n)
        for n in watcher.__all__
        if isinstance(getattr(watcher, n), type) and issubclass(getattr(watcher, n), BaseException)
    ]
    assert len(errors) >= 10
    assert all(issubclass(e, watcher.WatcherError) for e in errors)
