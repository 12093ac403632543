"""DEPLOYMENT.md's configuration table: generated from the code, committed fresh, and naming exactly
the environment variables the code reads.

The variables are discovered, not listed: literal names passed to os.environ[...], os.environ.get,
environ.get and os.getenv in the project's Python sources, plus the aliases of the Settings model.
"""
import ast
import re
from pathlib import Path

import pytest

from carbon_optimizer import settings
from carbon_optimizer.ops.env_variables import GUNICORN_VARIABLES
from tools import config_table

ROOT = Path(__file__).resolve().parent.parent
# client/: the CI client runs on runners, not in the service; its variables (CARBON_OPTIMIZER_URL,
# CARBON_OPTIMIZER_KEY) are documented with it, in the README's "Using it from CI".
SKIP_DIRS = {".venv", "tests", "bench", ".git", "__pycache__", ".hypothesis", ".pytest_cache", "client"}


def _sources():
    for path in ROOT.rglob("*.py"):
        if not SKIP_DIRS.intersection(path.relative_to(ROOT).parts):
            yield path


def _is_environ(node) -> bool:
    # os.environ, environ (a parameter defaulting to os.environ), or a name ending in "environ".
    if isinstance(node, ast.Attribute):
        return node.attr == "environ"
    return isinstance(node, ast.Name) and node.id.endswith("environ")


def _literal(node):
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def code_env_vars() -> set[str]:
    names = set(settings.env_var_names())
    for path in _sources():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            name = None
            if isinstance(node, ast.Subscript) and _is_environ(node.value):
                name = _literal(node.slice)
            elif isinstance(node, ast.Call) and node.args:
                func = node.func
                if isinstance(func, ast.Attribute) and func.attr in ("get", "setdefault") \
                        and _is_environ(func.value):
                    name = _literal(node.args[0])
                elif isinstance(func, ast.Attribute) and func.attr == "getenv":
                    name = _literal(node.args[0])
                elif isinstance(func, ast.Name) and func.id in ("getenv", "_int"):
                    # gunicorn.conf.py's _int(name, default) reads os.environ[name].
                    name = _literal(node.args[0])
            if name and re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
                names.add(name)
    # WSGI environ keys (REMOTE_ADDR, HTTP_*, ...) are request data, not configuration.
    return {n for n in names if n not in {"REMOTE_ADDR", "REQUEST_METHOD", "PATH_INFO", "QUERY_STRING",
                                          "SERVER_PROTOCOL"} and not n.startswith("HTTP_")}


def table_rows(markdown: str) -> dict[str, str]:
    """The generated block's rows: variable name -> its default cell, read from the text."""
    block = markdown[markdown.index("<!-- BEGIN configuration table"):markdown.index("<!-- END configuration table")]
    rows = {}
    for line in block.splitlines():
        match = re.fullmatch(r"\| `([A-Z][A-Z0-9_]*)` \| (.*?) \| .* \|", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


DEPLOYMENT_TEXT = (ROOT / "DEPLOYMENT.md").read_text()


def test_discovery_finds_known_variables():
    found = code_env_vars()
    assert {"REDIS_URL", "GUNICORN_WORKERS", "PROMETHEUS_MULTIPROC_DIR", "API_KEYS"} <= found


def test_deployment_md_configuration_table_matches_code():
    documented = set(table_rows(DEPLOYMENT_TEXT))
    read = code_env_vars()
    assert not read - documented, f"read by the code, missing from DEPLOYMENT.md: {sorted(read - documented)}"
    assert not documented - read, f"in DEPLOYMENT.md, not read by the code: {sorted(documented - read)}"


def test_committed_table_is_the_generated_one():
    assert config_table.committed_block(DEPLOYMENT_TEXT) == config_table.render(), \
        "DEPLOYMENT.md's configuration table is stale: run `make docs`"


def test_check_mode_fails_on_a_stale_table(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "DEPLOYMENT.md"
    stale.write_text(DEPLOYMENT_TEXT.replace("| `REDIS_URL` | unset |", "| `REDIS_URL` | `redis://x` |"))
    monkeypatch.setattr(config_table, "DEPLOYMENT", stale)
    assert config_table.main(["--check"]) == 1
    assert config_table.main([]) == 0
    assert config_table.main(["--check"]) == 0
    assert stale.read_text() == DEPLOYMENT_TEXT


def test_every_setting_describes_itself_in_one_table_cell():
    for name, field in settings.Settings.model_fields.items():
        assert field.description, f"Settings.{name} has no description"
        assert "|" not in field.description and "\n" not in field.description, name


@pytest.mark.parametrize("name, cell", [
    ("UPSTREAM_READ_TIMEOUT", "`10`"), ("UPSTREAM_CONNECT_TIMEOUT", "`1.5`"),
    ("FILE_FORECAST_HOURS", "`24`"), ("DEFAULT_ZONES", "`DE`"), ("RATE_LIMIT_ENABLED", "`true`"),
    ("FILE_REPLAY", "`false`"), ("RATE_LIMIT_OPTIMIZE", "`20 per minute`"), ("REDIS_URL", "unset"),
    ("CLOUD_REGION_OVERRIDES", "unset"), ("METRICS_ALLOW_CIDRS", "unset"), ("VAULT_TOKEN", "unset"),
    ("GUNICORN_WORKERS", "2 × usable CPUs + 1, at most 17"), ("API_KEYS", "unset"),
])
def test_defaults_are_written_as_they_would_be_set(name, cell):
    assert table_rows(DEPLOYMENT_TEXT)[name] == cell


def test_documented_setting_defaults_are_the_defaults():
    """Setting each variable to the default the table shows changes nothing."""
    unset = settings.load_settings({})
    aliases = {field.alias: name for name, field in settings.Settings.model_fields.items()}
    for variable, cell in table_rows(DEPLOYMENT_TEXT).items():
        if variable in aliases and cell.startswith("`"):
            written = settings.load_settings({variable: cell.strip("`")})
            assert getattr(written, aliases[variable]) == getattr(unset, aliases[variable]), variable


def test_gunicorn_defaults_are_the_ones_gunicorn_conf_reads():
    """Literal defaults in gunicorn.conf.py: _int("NAME", 60) and os.environ.get("NAME", "text")."""
    tree = ast.parse((ROOT / "gunicorn.conf.py").read_text())
    in_code = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and len(node.args) == 2 and all(isinstance(a, ast.Constant) for a in node.args):
            name, default = (a.value for a in node.args)
            if isinstance(name, str) and (name.startswith("GUNICORN_") or name == "PROMETHEUS_MULTIPROC_DIR"):
                in_code[name] = str(default)
    listed = {v.name: v.default for v in GUNICORN_VARIABLES if v.default is not None}
    # GUNICORN_WORKERS' 1 applies only to a blank value; its default is computed (computed_default).
    in_code.pop("GUNICORN_WORKERS")
    assert listed == in_code


def test_readme_has_no_configuration_table_and_links_deployment_md():
    readme = (ROOT / "README.md").read_text()
    rows = set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)`", readme, re.M))
    assert not rows & code_env_vars(), "the configuration table lives in DEPLOYMENT.md only"
    assert "DEPLOYMENT.md#configuration" in readme


def test_table_parser_sees_a_missing_row():
    text = ("<!-- BEGIN configuration table -->\n| variable | default | meaning |\n|---|---|---|\n"
            "| `REDIS_URL` | unset | x |\n<!-- END configuration table -->\n| `X_Y` | `1` | y |\n")
    assert table_rows(text) == {"REDIS_URL": "unset"}
