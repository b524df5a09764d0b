"""Where T-MAC Chat keeps its files: data, cache, config and models folders.

Defaults come from platformdirs (per-user, per-OS). Setting the environment
variable TMAC_CHAT_HOME puts everything under that one folder instead, which
is what tests and portable installs use. Pure Python: must not import PySide6
or tmac_core.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP_NAME = "TMACChat"
APP_AUTHOR = "TMAC"
HOME_ENV_VAR = "TMAC_CHAT_HOME"


@dataclass(frozen=True)
class AppPaths:
    data_dir: Path  # chat database, settings backups
    cache_dir: Path  # repacked model cache (safe to delete)
    config_dir: Path  # settings.json
    models_dir: Path  # downloaded and imported GGUF files (default; a setting may override)

    @property
    def settings_file(self) -> Path:
        return self.config_dir / "settings.json"

    @property
    def chat_db_file(self) -> Path:
        return self.data_dir / "chats.sqlite3"

    @property
    def engine_cache_dir(self) -> Path:
        """The repacked-model cache every engine process shares: TMAC_CACHE_DIR (as in
        tmac_core), else <cache>/repacked. Read at call time, like TMAC_CHAT_HOME."""
        override = os.environ.get("TMAC_CACHE_DIR")
        return Path(override).expanduser() if override else self.cache_dir / "repacked"

    def ensure(self) -> AppPaths:
        """Create every folder (idempotent) and return self."""
        for folder in (self.data_dir, self.cache_dir, self.config_dir, self.models_dir):
            folder.mkdir(parents=True, exist_ok=True)
        return self


def app_paths() -> AppPaths:
    """Resolve the folders now (reads TMAC_CHAT_HOME at call time, not import time)."""
    home = os.environ.get(HOME_ENV_VAR)
    if home:
        root = Path(home).expanduser()
        return AppPaths(
            data_dir=root / "data",
            cache_dir=root / "cache",
            config_dir=root / "config",
            models_dir=root / "models",
        )
    data = Path(platformdirs.user_data_dir(APP_NAME, APP_AUTHOR))
    return AppPaths(
        data_dir=data,
        cache_dir=Path(platformdirs.user_cache_dir(APP_NAME, APP_AUTHOR)),
        config_dir=Path(platformdirs.user_config_dir(APP_NAME, APP_AUTHOR)),
        # Models are big and user-visible, so they live in the data dir, not the cache
        # (cache dirs get cleaned by OS tools).
        models_dir=data / "models",
    )


def fsync_directory(folder: Path) -> None:
    """Make a rename inside `folder` durable (POSIX); a no-op where directories can't be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)


def replace_with_retry(source: Path, target: Path, attempts: int = 10) -> None:
    """os.replace, retried briefly: on Windows an antivirus or indexer holding `target`
    makes the rename fail with a transient PermissionError (WinError 5/32/33)."""
    import time

    for attempt in range(attempts):
        try:
            os.replace(source, target)
            return
        except PermissionError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.01 * (attempt + 1))


def atomic_write_bytes(target: Path, payload: bytes) -> None:
    """Write `payload` to `target` so a crash leaves either the old file or the new one, never half.

    Order matters: temp file in the same folder, flush + fsync, atomic rename, fsync the folder.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        with open(temp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        replace_with_retry(temp, target)
    finally:
        if temp.exists():
            temp.unlink()
    fsync_directory(target.parent)
