"""Checking an entry script (score.py) before it is deployed, without running it.

The inference server (azureml-inference-server-http, `server/user_script.py`) imports the script, calls
`init()` with no arguments once per worker, and calls `run(...)` per request. It refuses a `run` that takes
`*args`, `**kwargs` or positional-only parameters, or takes nothing but `request_headers`, and a `run`
decorated with both `@rawhttp` and `@input_schema`. These checks find the same mistakes from the syntax tree,
so they show up on the form with their line instead of in a replica's log minutes later.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

MAX_SCRIPT_BYTES = 512 * 1024


@dataclass(frozen=True)
class Problem:
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"score.py line {self.line}: {self.message}" if self.line else f"score.py: {self.message}"


@dataclass
class ScriptCheck:
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _top_level_definitions(body: list[ast.stmt]) -> dict[str, ast.stmt]:
    """Names bound at module level, looking into if/try/with blocks (`if TF2: def run...` is common).
    The last binding wins, as when Python runs the module."""
    found: dict[str, ast.stmt] = {}
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node
        elif isinstance(node, ast.If | ast.Try | ast.With):
            blocks = [node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])]
            blocks += [handler.body for handler in getattr(node, "handlers", [])]
            for block in blocks:
                found.update(_top_level_definitions(block))
    return found


def _decorator_names(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    names = []
    for decorator in function.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Name):
            names.append(target.id)
        elif isinstance(target, ast.Attribute):
            names.append(target.attr)
    return names


def _check_init(node: ast.stmt | None, check: ScriptCheck) -> None:
    if node is None:
        check.errors.append(
            Problem(None, "defines no init(): the server calls init() once to load the model.")
        )
        return
    if not isinstance(node, ast.FunctionDef):
        kind = "async def" if isinstance(node, ast.AsyncFunctionDef) else "not a function"
        check.errors.append(Problem(node.lineno, f"init is {kind}; define it with a plain `def init():`."))
        return
    args = node.args
    required = len(args.posonlyargs) + len(args.args) - len(args.defaults)
    required += sum(default is None for default in args.kw_defaults)
    if required:
        check.errors.append(
            Problem(node.lineno, "init() must work without arguments: the server calls init() with none.")
        )


def _check_run(node: ast.stmt | None, check: ScriptCheck) -> None:
    if node is None:
        check.errors.append(Problem(None, "defines no run(): the server calls run(...) for every request."))
        return
    if isinstance(node, ast.Assign):
        check.warnings.append(
            Problem(node.lineno, "run is assigned, not defined with def: its signature is unchecked.")
        )
        return
    if not isinstance(node, ast.FunctionDef):
        kind = "async def" if isinstance(node, ast.AsyncFunctionDef) else "not a function"
        check.errors.append(Problem(node.lineno, f"run is {kind}; define it with a plain `def run(...)`."))
        return
    args = node.args
    if args.vararg or args.kwarg:
        bad = ", ".join(
            f"*{args.vararg.arg}" if a is args.vararg else f"**{a.arg}"
            for a in (args.vararg, args.kwarg)
            if a
        )
        check.errors.append(
            Problem(
                node.lineno, f"run() takes {bad}: the inference server refuses *args and **kwargs in run()."
            )
        )
    if args.posonlyargs:
        check.errors.append(
            Problem(
                node.lineno,
                "run() has positional-only parameters (before /): the inference server refuses them.",
            )
        )
    params = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs) if a.arg != "request_headers"]
    if not params and not (args.vararg or args.kwarg):
        check.errors.append(
            Problem(
                node.lineno, "run() takes no input parameter: it needs one, e.g. run(request) or run(data)."
            )
        )
    decorators = _decorator_names(node)
    if "rawhttp" in decorators and "input_schema" in decorators:
        check.errors.append(
            Problem(node.lineno, "run() cannot be decorated with both @rawhttp and @input_schema.")
        )
    if "input_schema" not in decorators:
        # Without @input_schema the server passes exactly one argument (plus request_headers).
        positional = [a for a in (*args.posonlyargs, *args.args) if a.arg != "request_headers"]
        without_default = len(positional) - len(args.defaults)
        kw_required = [
            a.arg
            for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)
            if d is None and a.arg != "request_headers"
        ]
        extra = [a.arg for a in positional[1:without_default]] + kw_required
        if extra:
            check.errors.append(
                Problem(
                    node.lineno,
                    f"run() requires {', '.join(extra)} besides {params[0]}: "
                    "the server passes only one input "
                    "(give the others defaults, or use @input_schema).",
                )
            )


def check_entry_script(source: str) -> ScriptCheck:
    """Errors (deploying would fail) and warnings for an entry script, each with its line when known."""
    check = ScriptCheck()
    if len(source.encode()) > MAX_SCRIPT_BYTES:
        check.errors.append(
            Problem(None, f"is over {MAX_SCRIPT_BYTES // 1024} KiB; keep large code in modules.")
        )
        return check
    if "\x00" in source:
        check.errors.append(Problem(None, "contains a NUL character: is it a text file?"))
        return check
    try:
        tree = ast.parse(source, filename="score.py")
    except SyntaxError as exc:
        detail = f"{exc.msg}" + (f" (column {exc.offset})" if exc.offset else "")
        check.errors.append(Problem(exc.lineno, f"syntax error: {detail[:200]}"))
        return check
    except (RecursionError, MemoryError):
        # CPython's parser gives up on deep nesting (10^5 unary minuses, a 10^5-term sum) this way, not
        # with a SyntaxError; the interpreter would refuse to import the script all the same.
        check.errors.append(
            Problem(None, "is nested too deeply for Python to parse: split the long expression up.")
        )
        return check
    names = _top_level_definitions(tree.body)
    _check_init(names.get("init"), check)
    _check_run(names.get("run"), check)
    run = names.get("run")
    if isinstance(run, ast.FunctionDef) and "rawhttp" in _decorator_names(run) and "rawhttp" not in names:
        if not _imports(tree, "rawhttp"):
            check.errors.append(
                Problem(
                    run.lineno,
                    "@rawhttp is used but never imported: add "
                    "`from azureml.contrib.services.aml_request import rawhttp`.",
                )
            )
    return check


def _imports(tree: ast.Module, name: str) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and any(
            (alias.asname or alias.name) == name for alias in node.names
        ):
            return True
    return False
