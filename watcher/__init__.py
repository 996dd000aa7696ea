"""watcher: wait on remote tasks until they finish, and deliver every result reliably."""

from __future__ import annotations
