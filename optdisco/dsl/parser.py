"""Rule text -> :class:`~optdisco.dsl.ir.Program`, through Python's ``ast``; never executed.

Every way a text can fail to be a rule ends in a :class:`DSLError` with the line, the
column and what to do. The checks follow the normative grammar in DESIGN.md.
"""

from __future__ import annotations

import ast
import difflib
import textwrap
import warnings

from . import shapes
from .builtins import ALIASES, BUILTINS, CALLABLE, INFIX, STATE_SHAPES
from .errors import DSLError
from .ir import READ_ONLY_NAMES, TENSOR_INPUTS, Assign, Call, Const, Expr, Name, Program, neg

MAX_DEPTH = 64
MAX_STATEMENTS = 512

_BINOPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.Pow: "pow"}
_BINOP_ADVICE = {
    ast.MatMult: "matrix products are not elementwise; use orthogonalize, row_mean or col_mean",
    ast.FloorDiv: "floor division is not supported; use /",
    ast.Mod: "the modulo operator is not supported",
}
_STATEMENT_ADVICE = {
    ast.For: "loops are not allowed: a rule is straight-line code",
    ast.While: "loops are not allowed: a rule is straight-line code",
    ast.AsyncFor: "loops are not allowed: a rule is straight-line code",
    ast.If: "'if' is not allowed: use where(c, a, b) or gt(a, b) for a choice per element",
    ast.Import: "imports are not allowed: every function a rule may call is built in",
    ast.ImportFrom: "imports are not allowed: every function a rule may call is built in",
    ast.With: "'with' is not allowed",
    ast.AsyncWith: "'with' is not allowed",
    ast.Try: "'try' is not allowed",
    ast.Raise: "'raise' is not allowed",
    ast.Assert: "'assert' is not allowed",
    ast.Delete: "'del' is not allowed",
    ast.Pass: "'pass' is not allowed: write assignments and one return",
    ast.Break: "'break' is not allowed",
    ast.Continue: "'continue' is not allowed",
    ast.Global: "'global' is not allowed",
    ast.Nonlocal: "'nonlocal' is not allowed",
    ast.FunctionDef: "nested functions are not allowed",
    ast.AsyncFunctionDef: "nested functions are not allowed",
    ast.ClassDef: "classes are not allowed",
    ast.AnnAssign: "annotated assignments are not allowed: write name = expr",
}
if hasattr(ast, "TryStar"):
    _STATEMENT_ADVICE[ast.TryStar] = "'try' is not allowed"
if hasattr(ast, "Match"):
    _STATEMENT_ADVICE[ast.Match] = "'match' is not allowed: use where(c, a, b)"

_EXPR_ADVICE = {
    ast.Attribute: "attributes are not allowed: call built-ins by name, e.g. sqrt(x), not torch.sqrt(x)",
    ast.Subscript: "subscripts are not allowed: rules are elementwise over whole tensors",
    ast.Lambda: "lambdas are not allowed",
    ast.NamedExpr: "the walrus operator := is not allowed: write a separate assignment",
    ast.Compare: "comparisons are not values here: use gt(a, b) (1.0 where a > b) or where(c, a, b)",
    ast.BoolOp: "'and'/'or' are not allowed: use minimum/maximum of gt(...) values",
    ast.IfExp: "conditional expressions are not allowed: use where(c, a, b)",
    ast.List: "lists are not allowed",
    ast.Tuple: "tuples are only allowed after return",
    ast.Set: "sets are not allowed",
    ast.Dict: "dicts are not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "generator expressions are not allowed",
    ast.Await: "'await' is not allowed",
    ast.Yield: "'yield' is not allowed",
    ast.YieldFrom: "'yield' is not allowed",
    ast.JoinedStr: "strings are not allowed",
    ast.FormattedValue: "strings are not allowed",
    ast.Starred: "starred expressions are not allowed",
    ast.Slice: "slices are not allowed",
}


def parse(text: str) -> Program:
    """Parse rule text into a Program; raise :class:`DSLError` on anything outside the language."""
    if not isinstance(text, str):
        raise TypeError(f"rule text must be a str, not {type(text).__name__}")
    if text.startswith("\ufeff"):  # a byte-order mark from a file saved by some editors
        text = text[1:]
    try:
        return _Parser(text).program()
    except DSLError as e:
        raise _in_original_columns(e, text) from None
    except RecursionError:
        raise DSLError("the rule is nested too deeply", 1, 1,
                       hint=f"split long expressions into statements (at most {MAX_DEPTH} levels)") from None
    except MemoryError:
        raise DSLError("the rule is too large to parse", 1, 1) from None


def _text_position(text: str, default: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    """Where a whole-text problem is: the first NUL character if any, else ``default``."""
    i = text.find("\x00")
    if i < 0:
        return default
    line = text.count("\n", 0, i) + 1
    return line, i - (text.rfind("\n", 0, i) + 1) + 1


def _in_original_columns(e: DSLError, text: str) -> DSLError:
    """``e`` with its column counted in ``text`` rather than in the dedented text parsed."""
    dedented = _dedent(text)
    if dedented == text or e.line is None or e.col is None:
        return e
    original, parsed = text.splitlines(), dedented.splitlines()
    if e.line > min(len(original), len(parsed)):
        return e
    shift = len(original[e.line - 1]) - len(parsed[e.line - 1])
    return DSLError(e.message, e.line, e.col + shift, e.hint) if shift > 0 else e


def _pos(node: ast.AST) -> tuple[int | None, int | None]:
    line = getattr(node, "lineno", None)
    col = getattr(node, "col_offset", None)
    return line, (col + 1 if col is not None else None)


def _error(node: ast.AST, message: str, hint: str | None = None) -> DSLError:
    line, col = _pos(node)
    return DSLError(message, line, col, hint)


def _suggest(word: str, candidates) -> str | None:
    if word in ALIASES:
        return f"use {ALIASES[word]}"
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def _dedent(text: str) -> str:
    # Dedent only text that is indented as a whole (e.g. a rule pasted from a class body);
    # printed sources start at column 0 and must come back unchanged.
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    return textwrap.dedent(text) if first[:1] in (" ", "\t") else text


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.node_of: dict[int, ast.AST] = {}
        self.keep: list[Expr] = []
        self.state_shapes: tuple[tuple[str, str], ...] = ()

    def program(self) -> Program:
        try:
            with warnings.catch_warnings():  # e.g. "invalid escape sequence": ours to report, not Python's
                warnings.simplefilter("ignore")
                tree = ast.parse(_dedent(self.text), mode="exec")
        except SyntaxError as e:
            msg = e.msg or "invalid syntax"
            line, col = (e.lineno, e.offset or 1) if e.lineno else _text_position(self.text)
            raise DSLError(f"syntax error: {msg}", line, col,
                           "a rule is one Python function definition") from None
        except (ValueError, OverflowError) as e:  # null bytes, huge literals
            raise DSLError(f"cannot parse the text: {e}", *_text_position(self.text)) from None

        defs = [n for n in tree.body]
        if not defs:
            raise DSLError("empty rule text", 1, 1,
                           "write one function: def name(w, g, *states, *, hyper=0.9): ... return u, *states")
        fn = defs[0]
        if not isinstance(fn, ast.FunctionDef):
            if isinstance(fn, ast.AsyncFunctionDef):
                raise _error(fn, "async functions are not rules")
            advice = _STATEMENT_ADVICE.get(type(fn))
            raise _error(fn, "a rule text must consist of exactly one function definition",
                         advice or "start with: def name(w, g, ...):")
        if len(defs) > 1:
            raise _error(defs[1], "only one function definition is allowed per rule text",
                         "put each rule in its own text")
        if fn.decorator_list:
            raise _error(fn.decorator_list[0], "decorators are not allowed")
        if fn.returns is not None:
            raise _error(fn.returns, "return annotations are not allowed")
        if getattr(fn, "type_params", None):
            raise _error(fn, "type parameters are not allowed")
        states, hyper = self.signature(fn)
        return self.body(fn, states, hyper)

    # -- signature -------------------------------------------------------------
    def signature(self, fn: ast.FunctionDef):
        a = fn.args
        if a.posonlyargs:
            raise _error(a.posonlyargs[0], "positional-only parameters ('/') are not allowed")
        if a.vararg is not None:
            raise _error(a.vararg, "*args is not allowed",
                         "list each state tensor by name, then a bare * before hyperparameters")
        if a.kwarg is not None:
            raise _error(a.kwarg, "**kwargs is not allowed", "declare each hyperparameter with a default")
        if a.defaults:
            raise _error(a.defaults[0], "positional parameters (w, g and the states) take no default",
                         "states start at zero; put hyperparameters after a bare *")
        positional = a.args
        seen: set[str] = set()
        state_args = list(positional[2:])
        for arg in list(positional) + list(a.kwonlyargs):
            if arg.annotation is not None and not any(arg is s for s in state_args):
                raise _error(arg.annotation, f"type annotations are not allowed on '{arg.arg}'",
                             "only states may declare a shape, e.g. L: left_factor")
            if arg.arg in seen:
                raise _error(arg, f"duplicate parameter '{arg.arg}'")
            seen.add(arg.arg)
            self.check_new_name(arg, arg.arg)
        for i, expected in enumerate(TENSOR_INPUTS):
            if len(positional) <= i:
                raise _error(fn, f"missing positional parameter '{expected}'",
                             "a rule starts: def name(w, g, ...) with w the parameter and g its gradient")
            if positional[i].arg != expected:
                raise _error(positional[i], f"positional parameter {i + 1} must be named '{expected}', "
                                            f"not '{positional[i].arg}'",
                             "w is the parameter, g its gradient")
        states = tuple(arg.arg for arg in positional[2:])
        self.state_shapes = tuple((arg.arg, self.state_shape(arg)) for arg in positional[2:])
        hyper = []
        for arg, default in zip(a.kwonlyargs, a.kw_defaults):
            if default is None:
                raise _error(arg, f"hyperparameter '{arg.arg}' needs a float default",
                             f"write {arg.arg}=0.9")
            hyper.append((arg.arg, self.float_default(arg.arg, default)))
        return states, tuple(hyper)

    def state_shape(self, arg: ast.arg) -> str:
        """The declared shape of a state parameter: its annotation, a name from STATE_SHAPES."""
        ann = arg.annotation
        if ann is None:
            return "param"
        if isinstance(ann, ast.Name) and ann.id in STATE_SHAPES:
            return ann.id
        shown = ann.id if isinstance(ann, ast.Name) else ast.unparse(ann)
        hint = _suggest(shown, sorted(STATE_SHAPES)) if isinstance(ann, ast.Name) else None
        raise _error(ann, f"unknown state shape '{shown}' (on '{arg.arg}')",
                     hint or f"a state shape is one of {', '.join(STATE_SHAPES)}")

    def float_default(self, name: str, node: ast.expr) -> float:
        sign = 1.0
        inner = node
        while isinstance(inner, ast.UnaryOp) and isinstance(inner.op, (ast.USub, ast.UAdd)):
            if isinstance(inner.op, ast.USub):
                sign = -sign
            inner = inner.operand
        if (isinstance(inner, ast.Constant) and isinstance(inner.value, (int, float))
                and not isinstance(inner.value, bool)):
            return self.literal(inner, sign * inner.value)
        raise _error(node, f"the default of hyperparameter '{name}' must be a float literal",
                     "e.g. beta=0.9 or eps=1e-8")

    def literal(self, node: ast.AST, value) -> float:
        try:
            out = float(value)
        except OverflowError:
            raise _error(node, "number too large") from None
        if out != out or out in (float("inf"), float("-inf")):
            raise _error(node, "number must be finite")
        return out

    def check_new_name(self, node: ast.AST, name: str) -> None:
        if name in BUILTINS:
            raise _error(node, f"'{name}' is a built-in function and cannot be a name here",
                         "choose another name")
        if name in READ_ONLY_NAMES:
            raise _error(node, f"'{name}' is a read-only name every rule can use, not a parameter",
                         f"remove it from the parameters and just read {name}")

    # -- body --------------------------------------------------------------------
    def body(self, fn: ast.FunctionDef, states: tuple[str, ...], hyper) -> Program:
        stmts = list(fn.body)
        docstring = None
        if stmts and isinstance(stmts[0], ast.Expr) and isinstance(stmts[0].value, ast.Constant) \
                and isinstance(stmts[0].value.value, str):
            docstring = stmts[0].value.value
            stmts = stmts[1:]
        if len(stmts) > MAX_STATEMENTS:
            raise _error(stmts[MAX_STATEMENTS], f"too many statements (at most {MAX_STATEMENTS})")

        hyper_names = {n for n, _ in hyper}
        self.defined: set[str] = set(TENSOR_INPUTS) | set(states) | hyper_names | set(READ_ONLY_NAMES)
        readonly = set(TENSOR_INPUTS) | hyper_names | set(READ_ONLY_NAMES)
        assigned: set[str] = set()
        body: list[Assign] = []
        ret = None
        declared = dict(self.state_shapes)
        self.shape_env: dict[str, str] = {n: shapes.SCALAR for n in hyper_names | set(READ_ONLY_NAMES)}
        self.shape_env.update({n: shapes.PARAM for n in TENSOR_INPUTS})
        self.shape_env.update({n: shapes.STATE_VALUE_SHAPE[d] for n, d in declared.items()})
        # names whose value is one for the whole param group (what a per_group state may hold);
        # not step: it counts each parameter's own updates, and a parameter may join late
        uniform = hyper_names | {"lr"} | {n for n, d in declared.items() if d == "per_group"}
        for stmt in stmts:
            if ret is not None:
                raise _error(stmt, "statements after return are not allowed")
            if isinstance(stmt, ast.Return):
                ret = stmt
                continue
            target, expr = self.statement(stmt)
            if target in readonly:
                what = ("the parameter" if target == "w" else "the gradient" if target == "g"
                        else "a hyperparameter" if target in hyper_names else "a read-only name")
                raise _error(stmt, f"cannot assign to '{target}': it is {what}",
                             "assign to a new name instead")
            if target in BUILTINS:
                raise _error(stmt, f"cannot assign to '{target}': it is a built-in function")
            value_shape = self.shape_of(expr, stmt)
            if target in declared:
                held = shapes.STATE_VALUE_SHAPE[declared[target]]
                if value_shape not in shapes.ACCEPTS[held]:
                    raise _error(stmt, f"state '{target}' is declared {declared[target]} but is "
                                       f"assigned {shapes.describe(value_shape)}",
                                 "assign it a value of its own shape (see optdisco.dsl.shapes)")
            if target in declared and declared[target] == "per_group" and not group_uniform(expr, uniform):
                raise _error(stmt, f"state '{target}' is declared per_group but is assigned a value "
                                   "that may differ between the parameters of a group",
                             "build it from literals, hyperparameters, lr, per_group states "
                             "and group_sum/group_max")
            if group_uniform(expr, uniform):
                uniform.add(target)
            else:
                uniform.discard(target)
            self.shape_env[target] = value_shape
            body.append(Assign(target, expr, stmt.lineno))
            self.defined.add(target)
            assigned.add(target)
        if ret is None:
            raise _error(fn, f"rule '{fn.name}' has no return statement",
                         f"end with: return u{''.join(', ' + s for s in states)}")
        update = self.returned(ret, states)
        if self.shape_of(update, ret) not in shapes.PARAM_LIKE:
            raise _error(ret, f"the update must be shaped like w, not {shapes.describe(self.shape_of(update, ret))}",
                         "turn a factor into an update with lmul, rmul or unrotate")
        for arg in fn.args.args[2:]:
            if arg.arg not in assigned:
                raise _error(arg, f"state '{arg.arg}' is never updated",
                             f"assign its next value (e.g. {arg.arg} = interp(g, {arg.arg}, 0.9)) "
                             "or remove it")
        return Program(fn.name, states, hyper, tuple(body), update, docstring,
                       state_shapes=self.state_shapes)

    def shape_of(self, e: Expr, stmt: ast.AST) -> str:
        """The static shape of ``e`` (see :mod:`optdisco.dsl.shapes`); a DSLError at the
        offending call (or its argument) when shapes do not mix."""
        if isinstance(e, Const):
            return shapes.SCALAR
        if isinstance(e, Name):
            return self.shape_env[e.id]
        assert isinstance(e, Call)
        arg_shapes = [self.shape_of(a, stmt) for a in e.args]
        try:
            return shapes.result_shape(e.fn, arg_shapes)
        except shapes.ShapeError as err:
            node = self.node_of.get(id(e), stmt)
            if err.arg is not None and isinstance(node, ast.Call) and err.arg < len(node.args):
                node = node.args[err.arg]
            elif err.arg is not None and isinstance(node, ast.BinOp):
                node = node.right if err.arg else node.left
            raise _error(node, f"shape mismatch: {err}",
                         "factors mix only with scalars and their own shape; "
                         "use lmul, rmul, rotate or unrotate to apply one to a w-shaped value") from None

    def statement(self, stmt: ast.stmt) -> tuple[str, Expr]:
        if isinstance(stmt, ast.Assign):
            if len(stmt.targets) != 1:
                raise _error(stmt, "chained assignment is not allowed: assign one name per statement")
            target = stmt.targets[0]
            if not isinstance(target, ast.Name):
                if isinstance(target, (ast.Tuple, ast.List)):
                    raise _error(target, "tuple unpacking is not allowed: assign one name per statement")
                raise _error(target, "only a plain name can be assigned",
                             _EXPR_ADVICE.get(type(target)))
            return target.id, self.expr(stmt.value, 0)
        if isinstance(stmt, ast.AugAssign):
            target = stmt.target
            if not isinstance(target, ast.Name):
                raise _error(target, "only a plain name can be assigned")
            op = _BINOPS.get(type(stmt.op))
            if op is None:
                raise _error(stmt, "unsupported augmented assignment", "use +=, -=, *=, /= or **=")
            if target.id not in self.defined:
                raise _error(target, f"'{target.id}' is used before it is assigned")
            return target.id, self.remember(Call(op, (Name(target.id), self.expr(stmt.value, 1))), stmt)
        if isinstance(stmt, ast.Expr):
            if isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
                raise _error(stmt, "strings are not allowed (only a docstring, as the first statement)")
            raise _error(stmt, "a bare expression does nothing: assign it to a name")
        advice = _STATEMENT_ADVICE.get(type(stmt), f"'{type(stmt).__name__}' statements are not allowed")
        raise _error(stmt, advice)

    def returned(self, ret: ast.Return, states: tuple[str, ...]) -> Expr:
        wanted = "return u" + "".join(", " + s for s in states)
        if ret.value is None:
            raise _error(ret, "return needs the update and every state", wanted)
        items = list(ret.value.elts) if isinstance(ret.value, ast.Tuple) else [ret.value]
        if len(items) != 1 + len(states):
            raise _error(ret, f"return lists {len(items)} value(s), but the rule needs "
                              f"{1 + len(states)}: the update, then every state in declaration order",
                         wanted)
        for item, state in zip(items[1:], states):
            if not (isinstance(item, ast.Name) and item.id == state):
                raise _error(item, f"return must list state '{state}' here, by name",
                             f"{wanted} (assign a state's new value to its own name)")
        return self.expr(items[0], 0)

    # -- expressions --------------------------------------------------------------
    def expr(self, node: ast.expr, depth: int) -> Expr:
        if depth > MAX_DEPTH:
            raise _error(node, "expression nested too deeply",
                         f"split it into statements (at most {MAX_DEPTH} levels)")
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, bool) or v is None:
                raise _error(node, f"{v!r} is not a number", "write a float literal")
            if isinstance(v, (int, float)):
                return Const(self.literal(node, v))
            if isinstance(v, (str, bytes)):
                raise _error(node, "strings are not allowed")
            if isinstance(v, complex):
                raise _error(node, "complex numbers are not allowed")
            raise _error(node, f"'{v!r}' is not allowed")
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.UnaryOp):
            operand = self.expr(node.operand, depth + 1)
            if isinstance(node.op, ast.USub):
                return neg(operand)
            if isinstance(node.op, ast.UAdd):
                return operand
            raise _error(node, "'not' and '~' are not allowed", "use gt(a, b) or 1.0 - x")
        if isinstance(node, ast.BinOp):
            op = _BINOPS.get(type(node.op))
            if op is None:
                raise _error(node, f"operator not allowed: {type(node.op).__name__}",
                             _BINOP_ADVICE.get(type(node.op), "use + - * / **"))
            return self.remember(Call(op, (self.expr(node.left, depth + 1),
                                           self.expr(node.right, depth + 1))), node)
        if isinstance(node, ast.Call):
            return self.remember(self.call(node, depth), node)
        advice = _EXPR_ADVICE.get(type(node), f"'{type(node).__name__}' is not part of the rule language")
        raise _error(node, advice)

    def remember(self, e: Expr, node: ast.AST) -> Expr:
        """``e``, noted as written at ``node`` (for the position of a shape error)."""
        self.node_of[id(e)] = node
        self.keep.append(e)  # ids stay unique while the text is parsed
        return e

    def name(self, node: ast.Name) -> Expr:
        ident = node.id
        if ident in CALLABLE:
            raise _error(node, f"'{ident}' is a function: call it",
                         f"{ident}(" + ", ".join("x" * 1 for _ in range(CALLABLE[ident].arity)) + ")")
        if ident not in self.defined:
            hint = _suggest(ident, sorted(self.defined))
            raise _error(node, f"unknown name '{ident}'", hint or "assign it before use")
        return Name(ident)

    def call(self, node: ast.Call, depth: int) -> Expr:
        if not isinstance(node.func, ast.Name):
            advice = _EXPR_ADVICE.get(type(node.func), "call built-ins by name")
            raise _error(node.func, advice)
        fn = node.func.id
        if fn not in CALLABLE:
            if fn in self.defined:
                raise _error(node.func, f"'{fn}' is a value, not a function")
            hint = _suggest(fn, sorted(CALLABLE))
            if fn in INFIX.values() or fn in BUILTINS:
                hint = f"write the operator infix ({fn} is an operator)"
            raise _error(node.func, f"unknown function '{fn}'", hint or "see optdisco.dsl.builtins")
        if node.keywords:
            raise _error(node.keywords[0], f"keyword arguments are not allowed in calls (in {fn}(...))",
                         "pass arguments by position")
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise _error(arg, "starred arguments are not allowed")
        spec = CALLABLE[fn]
        if len(node.args) != spec.arity:
            plural = "s" if spec.arity != 1 else ""
            raise _error(node, f"{fn}() takes {spec.arity} argument{plural}, got {len(node.args)}",
                         f"{fn}: {spec.doc}")
        return Call(fn, tuple(self.expr(a, depth + 1) for a in node.args))


#: Built-in kinds whose result is group-uniform when every argument is.
_UNIFORM_KINDS = ("operator", "elementwise")


def group_uniform(e: Expr, uniform: set[str]) -> bool:
    """Whether expression ``e`` has one value for every parameter of a param group: a literal,
    a name in ``uniform`` (hyperparameters, ``lr``, ``per_group`` states and
    temporaries so computed), a group built-in (``group_sum``, ``group_max``), or an operator
    or elementwise built-in of such values."""
    if isinstance(e, Const):
        return True
    if isinstance(e, Name):
        return e.id in uniform
    assert isinstance(e, Call)
    kind = BUILTINS[e.fn].kind
    if kind == "group":
        return True
    return kind in _UNIFORM_KINDS and all(group_uniform(a, uniform) for a in e.args)
