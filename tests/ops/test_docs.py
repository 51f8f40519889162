"""The user docs stay true to the code: every config key is documented, every link resolves.

Every field of the agent's and the collector's config dataclasses, walked recursively from
``AgentConfig`` and ``CollectorConfig``, must have a row (or a list item) under its section's
``## [section]`` heading in docs/configuration.md, and every row there must name a real key.
Every relative link in README.md and docs/ must point at a file that exists, and a link into a
Markdown file's ``#anchor`` at one of its headings. Every repository path
(``agent/lifeline_agent/probes/stats.py``), dotted module name (``lifeline_wire.layers``, perhaps
followed by a name defined there) and module file name (``spool.py``) that docs/ mentions exists,
so a module that moves takes its mentions with it.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifeline_agent.config import AgentConfig
from lifeline_collector.config import CollectorConfig

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DOC = ROOT / "docs" / "configuration.md"

# Fields filled in by the loaders rather than read from the file, by (section, field).
DERIVED = {
    ("", "source"),  # the path the config was read from
    ("targets", "discovered"),  # set on targets that discovery adds
    ("api", "admin_token_hash"),  # the hash of the token read from admin_token_file
    ("auth", "viewer_token_hash"),  # the hash of the token read from viewer_token_file
    ("notifiers", "token"),  # read from token_file
    ("notifiers", "password"),  # read from password_file
}
# Fields whose TOML key differs from the field name (a Python keyword, or one field from two keys).
RENAMED = {
    ("notifiers", "sender"): ("from",),
    ("notifiers", "urls"): ("url",),  # `url` may be a list of peers (an Alertmanager cluster)
    ("routes", "continue_"): ("continue",),
    ("routes", "matchers"): ("match", "match_re"),
}
# Mapping fields read from a table of their own: the table's keys are the mapping's default keys.
TABLES = {("alerting", "holds"): "alerting.for"}

Key = tuple[str, str]  # (section, key)


def _join(section: str, name: str) -> str:
    return f"{section}.{name}" if section else name


def _subclasses(cls: type) -> list[type]:
    out = [cls]
    sub: type
    for sub in cls.__subclasses__():
        out.extend(_subclasses(sub))
    return out


def _listed_dataclass(hint: object) -> type | None:
    """X for ``tuple[X, ...]`` where X is a dataclass (a TOML array of tables)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis:
        inner = args[0]
        if isinstance(inner, type) and dataclasses.is_dataclass(inner):
            return inner
    return None


def config_keys(cls: type, section: str = "") -> Iterator[Key]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        where = (section, f.name)
        if where in DERIVED:
            continue
        if where in RENAMED:
            for key in RENAMED[where]:
                yield section, key
            continue
        if where in TABLES:
            default: typing.Mapping[str, object] = getattr(cls(), f.name)
            for key in default:
                yield TABLES[where], key
            continue
        hint = hints[f.name]
        listed = _listed_dataclass(hint)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            yield from config_keys(hint, _join(section, f.name))
        elif listed is not None:
            if section:  # a nested array of tables is also a key of its parent table
                yield section, f.name
            for sub in _subclasses(listed):  # e.g. each notifier kind's own config class
                yield from config_keys(sub, _join(section, f.name))
        else:
            yield section, f.name


def _section_name(heading: str) -> str:
    return heading.strip("# ").replace("`", "").replace("[", "").replace("]", "").strip()


def documented_keys(text: str) -> dict[str, set[Key]]:
    """program ('agent' | 'collector') -> the (section, key) pairs documented for it."""
    out: dict[str, set[Key]] = {"agent": set(), "collector": set()}
    program = ""
    section = ""
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        if line.startswith("# "):
            title = line.lower()
            program = "agent" if "agent" in title else "collector" if "collector" in title else ""
            section = ""
        elif line.startswith("## "):
            section = _section_name(line)
        elif program and section:
            if line.startswith("|"):
                first = line.strip().strip("|").split("|")[0]
                names = re.findall(r"`([^`]+)`", first)
            else:
                lead = re.match(r"^\s*[-*]\s+((?:`[^`]+`[\s,/]*(?:and\s+|or\s+)?)+)", line)
                names = re.findall(r"`([^`]+)`", lead.group(1)) if lead else []
            out[program].update((section, name) for name in names)
    return out


@pytest.mark.parametrize(("program", "config"), [("agent", AgentConfig), ("collector", CollectorConfig)])
def test_every_config_field_is_documented(program: str, config: type) -> None:
    keys = set(config_keys(config))
    documented = documented_keys(CONFIG_DOC.read_text(encoding="utf-8"))[program]
    missing = sorted(keys - documented)
    assert not missing, (
        f"docs/configuration.md lacks rows for these {program} keys (add each under its "
        f"'## [section]' heading in the {program} part): "
        + ", ".join(f"[{section}] {key}" for section, key in missing)
    )
    unknown = sorted(documented - keys)
    assert not unknown, f"docs/configuration.md documents {program} keys that do not exist: " + ", ".join(
        f"[{section}] {key}" for section, key in unknown
    )


def test_the_config_walk_finds_nested_and_listed_sections() -> None:
    agent = set(config_keys(AgentConfig))
    assert {("agent", "id"), ("collector", "endpoints"), ("collector.endpoints", "url")} <= agent
    assert ("targets", "discovered") not in agent
    collector = set(config_keys(CollectorConfig))
    assert {("alerting.for", "FailoverNotReady"), ("notifiers", "from"), ("routes", "match_re")} <= collector


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not re.match(r"^#{1,6} ", line):
            continue
        slug = _slug(line.lstrip("#"))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def _links(path: Path) -> Iterator[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    for match in re.finditer(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text):
        yield match.group(1)


@pytest.mark.parametrize("doc", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for link in _links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", link):  # http:, https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        path = (doc.parent / target).resolve() if target else doc
        if not path.exists():
            broken.append(f"{link} (no such file)")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{link} (no heading with that anchor)")
    assert not broken, f"{doc.relative_to(ROOT)}: broken links: " + ", ".join(broken)


# Repository paths written in the docs: a top-level folder, then more. Two words joined by a slash
# ("CPU agent/blackbox") count only with a trailing slash or a file extension.
_REPO_PATH = re.compile(
    r"(?<![\w/.:~-])((?:agent|collector|wire|lab|tests|bench|deploy|dashboards|docs)/[\w./-]*[\w/])"
)
# Paths inside a product package (``lifeline_wire/retry.py``), and dotted names
# (``lifeline_lab.measure.fping``: a module, then perhaps a name defined in it).
_PACKAGE_PATH = re.compile(r"(?<![\w/.-])(lifeline_(?:agent|collector|wire|lab)/[\w./-]*[\w/])")
_DOTTED = re.compile(r"(?<![\w.])(lifeline_(?:agent|collector|wire|lab)(?:\.[A-Za-z_]\w*)+)")
# A module's file name on its own (``spool.py``): some Python file of the repository is called so.
# (Other bare names are often files the programs write, such as ``status.json``.)
_FILE_NAME = re.compile(r"(?<![\w/.-])([A-Za-z_]\w*\.py)\b")
_PACKAGE_HOME = {"lifeline_agent": "agent", "lifeline_collector": "collector"} | {
    "lifeline_wire": "wire",
    "lifeline_lab": "lab",
}


def _doc_text(path: Path) -> str:
    """A doc's text with placeholders and globs taken out (``<prefix>``, ``{a,b}``, ``*.yml``)."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"\]\([^)]*\)", "]", text)  # links: test_relative_links_resolve checks those
    text = re.sub(r"https?://\S+", " ", text)
    return re.sub(r"\S*[<>{}*…]\S*", " ", text)


def _module_file(dotted: list[str]) -> Path | None:
    base = ROOT / _PACKAGE_HOME[dotted[0]]
    for candidate in (base.joinpath(*dotted).with_suffix(".py"), base.joinpath(*dotted, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


def _resolves(name: str) -> bool:
    """``name`` is a product module, or a module followed by names defined in it."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        if _module_file(parts[:cut]) is None:
            continue
        found: object = importlib.import_module(".".join(parts[:cut]))
        for attribute in parts[cut:]:
            if not hasattr(found, attribute):
                return False
            found = getattr(found, attribute)
        return True
    return False


def _is_path(mention: str) -> bool:
    return mention.endswith("/") or mention.count("/") >= 2 or "." in mention.rsplit("/", 1)[1]


def stale_mentions(path: Path) -> list[str]:
    """Every repository path, package path, dotted module name or file name in ``path`` that is
    not there."""
    text = _doc_text(path)
    names = {
        p.name
        for top in ("agent", "collector", "wire", "lab", "tests", "bench")
        for p in (ROOT / top).rglob("*.py")
    }
    stale = [m for m in _REPO_PATH.findall(text) if _is_path(m) and not (ROOT / m).exists()]
    stale += [
        m for m in _PACKAGE_PATH.findall(text) if not (ROOT / _PACKAGE_HOME[m.split("/")[0]] / m).exists()
    ]
    stale += [m for m in _DOTTED.findall(text) if not _resolves(m)]
    stale += [m for m in _FILE_NAME.findall(text) if m not in names]
    return sorted(set(stale))


@pytest.mark.parametrize("doc", sorted((ROOT / "docs").rglob("*.md")), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_paths_and_file_names_exist(doc: Path) -> None:
    stale = stale_mentions(doc)
    assert not stale, f"{doc.relative_to(ROOT)} names what is not in the repository: " + ", ".join(stale)


def test_stale_mentions_are_found(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "See `agent/lifeline_agent/probes/stats.py` and agent/lifeline_agent/gone.py, "
        "`lifeline_wire/retry.py`, lifeline_wire.retry.parse_retry_after, lifeline_wire.retry.nothing, "
        "lifeline_collector.gone, `pyproject.toml`, `nowhere.py`, `lab/<prefix>/x.json`, agent/blackbox "
        "and [a link](../missing.md).\n",
        encoding="utf-8",
    )
    assert stale_mentions(doc) == [
        "agent/lifeline_agent/gone.py",
        "lifeline_collector.gone",
        "lifeline_wire.retry.nothing",
        "nowhere.py",
    ]
