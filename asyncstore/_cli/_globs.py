"""Globs for keys and paths, and rsync-like ``--include``/``--exclude`` filters.

Glob syntax, the same everywhere: ``*`` matches any run of characters except
``/``; ``**`` matches any run including ``/``; ``?`` one character except
``/``; ``[abc]``, ``[a-z]``, ``[!abc]`` a character class. Every other
character matches itself.

Filters follow rsync's rules, applied to the path relative to the top of the
transfer (``/``-separated):

- The rules are tried in the order given, and the first that matches decides;
  a path that no rule matches is included.
- A pattern without a ``/`` (a trailing one aside) matches the last segment,
  at any depth: ``*.tmp`` matches ``a.tmp`` and ``x/y/a.tmp``.
- A pattern with a ``/`` inside matches the end of the path at a segment
  boundary: ``logs/*.gz`` matches ``logs/a.gz`` and ``x/logs/a.gz``; a leading
  ``/`` anchors it at the top: ``/build`` matches ``build`` only.
- A trailing ``/`` matches only directories (key prefixes): ``cache/``.
- Directories are filtered too: an excluded directory excludes everything
  below it, before the rules see those paths. So ``--include '*.txt'
  --exclude '*'`` keeps only the top level's ``.txt`` files (``*`` excludes
  every directory), and ``--include '*/' --include '*.txt' --exclude '*'``
  keeps every ``.txt`` file at any depth, as with rsync.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable

__all__ = ["Filter", "Glob", "Rule", "glob_regex", "literal_prefix"]


def glob_regex(pattern: str) -> str:
    """The regular expression (unanchored) equivalent to a glob ``pattern``."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if pattern.startswith("**", i):
                # "**/" also matches no directory at all: "a/**/b" matches "a/b".
                if pattern.startswith("**/", i):
                    out.append("(?:.*/)?")
                    i += 3
                else:
                    out.append(".*")
                    i += 2
                continue
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = i + 1
            if end < n and pattern[end] in "!^":
                end += 1
            if end < n and pattern[end] == "]":
                end += 1
            while end < n and pattern[end] != "]":
                end += 1
            if end >= n:  # no closing bracket: a literal '['
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1 : end]
                negate = body[:1] in ("!", "^")
                if negate:
                    body = body[1:]
                body = body.replace("\\", "\\\\")
                out.append(f"(?:(?!/)[{'^' if negate else ''}{body}])")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


def literal_prefix(pattern: str) -> str:
    """The part of ``pattern`` before its first glob character (what a listing can start at)."""
    match = re.search(r"[*?\[]", pattern)
    return pattern if match is None else pattern[: match.start()]


@dataclasses.dataclass(frozen=True)
class Glob:
    """A glob over whole keys (``logs/2024-*/*.gz``), as ``ls`` and ``cp`` take them.

    `matches` is true for a key the pattern matches, and `covers` also for
    every key below a "directory" the pattern matches (what ``-r`` copies).
    """

    pattern: str

    @functools.cached_property
    def _regex(self) -> re.Pattern[str]:
        return re.compile(glob_regex(self.pattern))

    @property
    def prefix(self) -> str:
        """The literal start of the pattern: list from here."""
        return literal_prefix(self.pattern)

    @property
    def base(self) -> str:
        """The pattern's literal directory (up to the last ``/`` of `prefix`).

        Names of matches relative to it keep their matched part: ``logs/2024-*``
        copies ``logs/2024-01/a.gz`` as ``2024-01/a.gz``.
        """
        prefix = self.prefix
        return prefix[: prefix.rfind("/") + 1]

    def matches(self, key: str) -> bool:
        """Whether the pattern matches ``key`` itself."""
        return self._regex.fullmatch(key) is not None

    def matched_dir(self, key: str) -> str | None:
        """The shortest "directory" of ``key`` (ending in ``/``) the pattern matches, if any."""
        start = len(self.base)
        while True:
            slash = key.find("/", start)
            if slash < 0:
                return None
            if self._regex.fullmatch(key[:slash]) is not None:
                return key[: slash + 1]
            start = slash + 1

    def covers(self, key: str) -> bool:
        """Whether ``key`` matches or lies below a directory that matches."""
        return self.matches(key) or self.matched_dir(key) is not None


@dataclasses.dataclass(frozen=True)
class Rule:
    """One ``--include`` or ``--exclude`` pattern."""

    include: bool
    pattern: str

    @functools.cached_property
    def _compiled(self) -> tuple[re.Pattern[str], bool, bool]:
        pattern = self.pattern
        dir_only = pattern.endswith("/") and len(pattern) > 1
        if dir_only:
            pattern = pattern.rstrip("/")
        anchored = pattern.startswith("/")
        if anchored:
            pattern = pattern.lstrip("/")
        whole_path = anchored or "/" in pattern or "**" in pattern
        body = glob_regex(pattern)
        if whole_path and not anchored:
            body = "(?:.*/)?" + body
        return re.compile(body), dir_only, whole_path

    def matches(self, path: str, *, is_dir: bool) -> bool:
        """Whether this rule matches ``path`` (relative, ``/``-separated)."""
        regex, dir_only, whole_path = self._compiled
        if dir_only and not is_dir:
            return False
        subject = path if whole_path else path.rpartition("/")[2]
        return regex.fullmatch(subject) is not None


class Filter:
    """Ordered ``--include``/``--exclude`` rules: the first that matches decides."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules = list(rules)
        self._dirs: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self.rules)

    def _decide(self, path: str, *, is_dir: bool) -> bool | None:
        for rule in self.rules:
            if rule.matches(path, is_dir=is_dir):
                return rule.include
        return None

    def dir_excluded(self, path: str) -> bool:
        """Whether the directory ``path`` (no trailing ``/``), or one above it, is excluded."""
        cached = self._dirs.get(path)
        if cached is not None:
            return cached
        parent, slash, _ = path.rpartition("/")
        excluded = (bool(slash) and self.dir_excluded(parent)) or (
            self._decide(path, is_dir=True) is False
        )
        self._dirs[path] = excluded
        return excluded

    def excluded(self, path: str) -> bool:
        """Whether the file or object at ``path`` is excluded (by itself or a directory)."""
        if not self.rules:
            return False
        parent, slash, _ = path.rpartition("/")
        if slash and self.dir_excluded(parent):
            return True
        return self._decide(path, is_dir=False) is False
