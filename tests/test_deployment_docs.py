"""DEPLOYMENT.md's configuration table names exactly the environment variables the code reads.

The variables are discovered, not listed: literal names passed to os.environ[...], os.environ.get,
environ.get and os.getenv in the project's Python sources, plus the aliases of the Settings model.
"""
import ast
import re
from pathlib import Path

from carbon_optimizer import settings

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


def table_env_vars(markdown: str, heading: str) -> set[str]:
    """First-column `NAME` cells of the table under the given heading."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().lower() == heading.lower())
    names = set()
    for line in lines[start + 1:]:
        if line.startswith("#"):
            break
        cells = line.split("|")
        if line.startswith("|") and len(cells) > 2:
            # A first cell may name several variables: `VAULT_ROLE_ID` / `VAULT_SECRET_ID`.
            names.update(re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[1]))
    return names


def test_discovery_finds_known_variables():
    found = code_env_vars()
    assert {"REDIS_URL", "GUNICORN_WORKERS", "PROMETHEUS_MULTIPROC_DIR", "API_KEYS"} <= found


def test_deployment_md_configuration_table_matches_code():
    documented = table_env_vars((ROOT / "DEPLOYMENT.md").read_text(), "## Configuration")
    read = code_env_vars()
    assert not read - documented, f"read by the code, missing from DEPLOYMENT.md: {sorted(read - documented)}"
    assert not documented - read, f"in DEPLOYMENT.md, not read by the code: {sorted(documented - read)}"


def test_readme_configuration_table_matches_code():
    documented = table_env_vars((ROOT / "README.md").read_text(), "## Configuration")
    read = code_env_vars()
    assert not read - documented, f"read by the code, missing from README.md: {sorted(read - documented)}"
    assert not documented - read, f"in README.md, not read by the code: {sorted(documented - read)}"


def test_table_parser_sees_a_missing_row():
    text = "## Configuration\n| Variable | Default |\n|---|---|\n| `REDIS_URL` | none |\n## Next\n| `X_Y` | 1 |\n"
    assert table_env_vars(text, "## Configuration") == {"REDIS_URL"}
