"""Static (AST) model of launch/*.launch.py for the tests (`launch` / `launch_ros` cannot be
installed here, docs/environment.md, so the files are read, not executed).

What it extracts per file: declared arguments (name, default, description, choices, condition,
FindPackageShare-relative default path), LaunchConfiguration names used, Node(...) calls
(package, executable, name, condition, parameter sources: params-file variables and
{parameter: launch argument} entries, remappings, on_exit), IncludeLaunchDescription(...) calls (target file,
condition, launch_arguments keys), FindPackageShare-relative paths (PathJoinSubstitution([share,
"config", "x.yaml"])) and `from X import names`. `graph()` resolves includes for a use_sim value
the way launch evaluates IfCondition / UnlessCondition on that argument.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_DIR = ROOT / "launch"


@dataclass
class Argument:
    name: str
    has_default: bool
    default: str | None
    description: str
    choices: list[str] | None
    condition: str | None
    default_share_path: str | None = None  # PathJoinSubstitution([share, "config", "x.yaml"]) -> "config/x.yaml"


@dataclass
class NodeCall:
    package: str | None
    executable: str
    name: str | None
    condition: str | None
    parameters: str
    on_exit: str
    parameter_files: list[str] = field(default_factory=list)  # variables in parameters=[...] (params_file, ...)
    # (parameter, launch argument, value_type or None) from the parameters dict
    launch_parameters: list[tuple[str, str, str | None]] = field(default_factory=list)
    remappings: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Include:
    target: str
    condition: str | None
    launch_arguments: list[str]


@dataclass
class LaunchFile:
    path: Path
    tree: ast.Module
    constants: dict[str, object]
    arguments: list[Argument] = field(default_factory=list)
    configurations: set[str] = field(default_factory=set)
    nodes: list[NodeCall] = field(default_factory=list)
    includes: list[Include] = field(default_factory=list)
    share_paths: list[str] = field(default_factory=list)
    imports: dict[str, list[str]] = field(default_factory=dict)
    calls: list[ast.Call] = field(default_factory=list)

    @property
    def declared(self) -> set[str]:
        return {a.name for a in self.arguments}


def _func_name(call: ast.Call) -> str:
    f = call.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute):
        return f.attr
    return ""


def _text(node: ast.AST | None) -> str:
    """A string literal, implicit concatenation or f-string -> its literal text ('' if none)."""
    if node is None:
        return ""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)) + "{}"
    return ""


def _condition(node: ast.AST | None) -> str | None:
    """IfCondition(use_sim) -> 'if:use_sim' (argument name when it is a LaunchConfiguration)."""
    if not isinstance(node, ast.Call):
        return None
    kind = _func_name(node)
    arg = node.args[0] if node.args else None
    name = ""
    if isinstance(arg, ast.Name):
        name = arg.id
    elif isinstance(arg, ast.Call) and _func_name(arg) == "LaunchConfiguration":
        name = ast.literal_eval(arg.args[0])
    return f"{'if' if kind == 'IfCondition' else 'unless' if kind == 'UnlessCondition' else kind}:{name}"


def _share_path(node: ast.AST | None) -> str | None:
    """PathJoinSubstitution([share, "a", "b"]) -> "a/b" (None for anything else)."""
    if not (isinstance(node, ast.Call) and _func_name(node) == "PathJoinSubstitution" and node.args
            and isinstance(node.args[0], ast.List)):
        return None
    parts = node.args[0].elts
    if not parts or not (isinstance(parts[0], ast.Name) and parts[0].id == "share"):
        return None
    strs = [p.value for p in parts[1:] if isinstance(p, ast.Constant) and isinstance(p.value, str)]
    return "/".join(strs) if len(strs) == len(parts) - 1 else None


def _parameter_sources(node: ast.AST | None) -> tuple[list[str], list[tuple[str, str, str | None]]]:
    """Node(parameters=[params_file, {"p": LaunchConfiguration("a"), "q": ParameterValue(
    LaunchConfiguration("b"), value_type=int)}]) -> (["params_file"], [("p", "a", None), ("q", "b", "int")])."""
    files: list[str] = []
    launch_params: list[tuple[str, str, str | None]] = []
    if not isinstance(node, ast.List):
        return files, launch_params
    for elt in node.elts:
        if isinstance(elt, ast.Name):
            files.append(elt.id)
        elif isinstance(elt, ast.Dict):
            for k, v in zip(elt.keys, elt.values):
                value_type = None
                if isinstance(v, ast.Call) and _func_name(v) == "ParameterValue":
                    vt = {kw.arg: kw.value for kw in v.keywords}.get("value_type")
                    value_type = vt.id if isinstance(vt, ast.Name) else None
                    v = v.args[0]
                arg = (ast.literal_eval(v.args[0]) if isinstance(v, ast.Call) and _func_name(v) == "LaunchConfiguration"
                       else ast.unparse(v))
                launch_params.append((ast.literal_eval(k), arg, value_type))
        else:
            files.append(ast.unparse(elt))
    return files, launch_params


def parse(path: Path) -> LaunchFile:
    src = path.read_text()
    tree = ast.parse(src, str(path))
    constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                 and isinstance(n.value, ast.Constant) for t in n.targets if isinstance(t, ast.Name)}
    lf = LaunchFile(path, tree, constants)
    # local variables bound to LaunchConfiguration("x") (use_sim = LaunchConfiguration("use_sim"))
    var_config: dict[str, str] = {}
    for n in ast.walk(tree):
        if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call) and _func_name(n.value) == "LaunchConfiguration":
            for t in n.targets:
                if isinstance(t, ast.Name):
                    var_config[t.id] = ast.literal_eval(n.value.args[0])

    def cond(node):
        c = _condition(node)
        if c is None:
            return None
        kind, name = c.split(":", 1)
        return f"{kind}:{var_config.get(name, name)}"

    def value(node):
        if isinstance(node, ast.Name):
            return constants.get(node.id)
        return ast.literal_eval(node)

    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.module:
            lf.imports.setdefault(n.module, []).extend(a.name for a in n.names)
        if not isinstance(n, ast.Call):
            continue
        lf.calls.append(n)
        fname = _func_name(n)
        kw = {k.arg: k.value for k in n.keywords}
        if fname == "DeclareLaunchArgument":
            default = kw.get("default_value")
            choices = kw.get("choices")
            choice_values = None
            if choices is not None:
                choice_values = []
                for elt in choices.elts:
                    if isinstance(elt, ast.Starred):
                        choice_values.append("*")  # e.g. *UR_TYPES: resolved by the tests
                    else:
                        choice_values.append(ast.literal_eval(elt))
            lf.arguments.append(Argument(
                name=ast.literal_eval(n.args[0]), has_default=default is not None,
                default=default.value if isinstance(default, ast.Constant) else None,
                description=_text(kw.get("description")), choices=choice_values,
                condition=cond(kw.get("condition")), default_share_path=_share_path(default)))
        elif fname == "LaunchConfiguration":
            lf.configurations.add(ast.literal_eval(n.args[0]))
        elif fname == "Node":
            files, launch_params = _parameter_sources(kw.get("parameters"))
            lf.nodes.append(NodeCall(
                package=value(kw["package"]) if "package" in kw else None,
                executable=ast.literal_eval(kw["executable"]),
                name=ast.literal_eval(kw["name"]) if "name" in kw else None,
                condition=cond(kw.get("condition")),
                parameters=ast.unparse(kw["parameters"]) if "parameters" in kw else "",
                on_exit=ast.unparse(kw["on_exit"]) if "on_exit" in kw else "",
                parameter_files=files, launch_parameters=launch_params,
                remappings=[tuple(r) for r in ast.literal_eval(kw["remappings"])] if "remappings" in kw else []))
        elif fname == "IncludeLaunchDescription":
            target = None
            for sub in ast.walk(n.args[0]):
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str) and sub.value.endswith(".launch.py"):
                    target = sub.value
            largs: list[str] = []
            la = kw.get("launch_arguments")
            if la is not None:
                d = la.func.value if isinstance(la, ast.Call) and isinstance(la.func, ast.Attribute) else la
                if isinstance(d, ast.Dict):
                    largs = [ast.literal_eval(k) for k in d.keys]
            lf.includes.append(Include(target=target, condition=cond(kw.get("condition")), launch_arguments=largs))
        elif fname == "PathJoinSubstitution":
            rel = _share_path(n)
            if rel is not None:
                lf.share_paths.append(rel)
    return lf


def launch_files() -> list[Path]:
    return sorted(LAUNCH_DIR.glob("*.launch.py"))


CONDITION_ARGUMENTS = ("use_sim", "combined_inference")


def condition_holds(condition: str | None, use_sim: bool, combined_inference: bool = False) -> bool:
    """Evaluate an if:/unless: condition on `use_sim` or `combined_inference` (None: always)."""
    if condition is None:
        return True
    kind, name = condition.split(":", 1)
    assert name in CONDITION_ARGUMENTS, f"unexpected condition on {name!r}"
    value = use_sim if name == "use_sim" else combined_inference
    return value if kind == "if" else not value


def graph(name: str, use_sim: bool = False, combined_inference: bool = False,
          _seen: tuple[str, ...] = ()) -> list[tuple[str, NodeCall]]:
    """[(file, Node)] started by launch/<name> for use_sim / combined_inference, includes resolved."""
    assert name not in _seen, f"include cycle {_seen + (name,)}"
    lf = parse(LAUNCH_DIR / name)
    out = [(name, n) for n in lf.nodes if condition_holds(n.condition, use_sim, combined_inference)]
    for inc in lf.includes:
        if condition_holds(inc.condition, use_sim, combined_inference):
            out += graph(inc.target, use_sim, combined_inference, _seen + (name,))
    return out
