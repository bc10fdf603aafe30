#!/usr/bin/env python3
"""QAPI-lite: the one checker and code generator of snapvm's QMP schema.

Usage:
  qapi-gen.py --json OUT.c --symbol NAME SCHEMA.json...
  qapi-gen.py --json OUT.c --commands-c OUT.c --commands-h OUT.h SCHEMA.json...

Reads the schema files (strict JSON objects, one definition each; lines that
start with '#' are comments), checks them, and writes:

  --json        a C file defining `const char NAME[]` (default
                qapi_schema_json): the checked definitions in a normalized
                form, which src/monitor/schema.c loads to validate calls,
                replies and events and to answer query-qmp-schema;
  --commands-h  for every command, a struct of its typed arguments and the
                prototype of its handler;
  --commands-c  for every command, the function that fills that struct from
                the (already validated) JSON arguments and calls the handler,
                and the command table `qapi_commands[]`.

So a handler that misspells an argument does not compile, and a command
without a handler does not link.  This file is the only place where the
rules of the schema language live.

The language (QEMU's QAPI, in strict JSON):
  {"enum": NAME, "data": [VALUE, ...]}
  {"struct": NAME, "data": MEMBERS, "base": STRUCT}            (base optional)
  {"union": NAME, "base": MEMBERS or STRUCT, "discriminator": MEMBER,
   "data": {VALUE: STRUCT, ...}}                               (a flat union)
  {"alternate": NAME, "data": {BRANCH: TYPE, ...}}
  {"command": NAME, "data": MEMBERS, "returns": TYPE}          (both optional)
  {"event": NAME, "data": MEMBERS}                             (data optional)
MEMBERS maps member names to TYPEs; a name starting with '*' is optional.
TYPE is a built-in (str, int, int8..int64, uint8..uint64, size, number,
bool, null, any), a defined type, or [TYPE] for an array of it.

Rules (as QAPI's): one namespace for every definition; no unknown keys; every
type named exists; a union's discriminator is a required enum member of its
base and every case is a value of that enum, its branches are structs; an
alternate's branches have distinct JSON types (and no 'null' twice, no
'any'); a struct's members do not clash with its base's.
"""
import argparse
import json
import re
import sys

BUILTINS = {
    # name: (C type, JSON kind)
    "str": ("const char *", "string"), "int": ("int64_t", "int"), "int8": ("int64_t", "int"),
    "int16": ("int64_t", "int"), "int32": ("int64_t", "int"), "int64": ("int64_t", "int"),
    "uint8": ("int64_t", "int"), "uint16": ("int64_t", "int"), "uint32": ("int64_t", "int"),
    "uint64": ("int64_t", "int"), "size": ("int64_t", "int"), "number": ("double", "number"),
    "bool": ("bool", "boolean"), "null": ("json_t *", "null"), "any": ("json_t *", "value"),
}
KINDS = ("enum", "struct", "union", "alternate", "command", "event")
ALLOWED = {
    "enum": {"data"},
    "struct": {"data", "base"},
    "union": {"base", "discriminator", "data"},
    "alternate": {"data"},
    "command": {"data", "returns"},
    "event": {"data"},
}
C_RESERVED = {"auto", "break", "case", "char", "const", "continue", "default", "do", "double",
              "else", "enum", "extern", "float", "for", "goto", "if", "inline", "int", "long",
              "register", "restrict", "return", "short", "signed", "sizeof", "static", "struct",
              "switch", "typedef", "union", "unsigned", "void", "volatile", "while", "bool"}


class SchemaError(Exception):
    pass


def read_defs(path):
    with open(path, encoding="utf-8") as f:
        text = "".join(l if not l.lstrip().startswith("#") else "\n" for l in f)
    dec = json.JSONDecoder()
    pos, defs = 0, []
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            return defs
        line = text.count("\n", 0, pos) + 1
        try:
            obj, pos = dec.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise SchemaError(f"{path}:{line}: invalid JSON: {e}")
        if not isinstance(obj, dict):
            raise SchemaError(f"{path}:{line}: a definition must be an object: {obj!r}")
        defs.append((f"{path}:{line}", obj))


def c_name(name):
    """QMP name -> C identifier: '-' and '.' become '_'; C keywords get 'q_'."""
    c = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return "q_" + c if c in C_RESERVED else c


class Schema:
    def __init__(self, sources):
        self.defs = {}  # name -> (where, kind, raw)
        self.order = []
        for where, d in sources:
            kinds = [k for k in KINDS if k in d]
            if len(kinds) != 1:
                raise SchemaError(f"{where}: a definition needs exactly one of {', '.join(KINDS)}")
            kind = kinds[0]
            name = d[kind]
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", name):
                raise SchemaError(f"{where}: bad {kind} name {name!r}")
            extra = set(d) - ALLOWED[kind] - {kind}
            if extra:
                raise SchemaError(f"{where}: {kind} '{name}': unknown keys {sorted(extra)}")
            if name in self.defs or name in BUILTINS:
                raise SchemaError(f"{where}: '{name}' is already defined "
                                  "(one namespace for every definition)")
            self.defs[name] = (where, kind, d)
            self.order.append(name)
        self.visiting = set()
        self.norm = {name: self._normalize(name) for name in self.order}

    # ---- checks ----

    def kind(self, name):
        return self.defs[name][1] if name in self.defs else "builtin"

    def check_type(self, where, t, allow_array=True):
        if isinstance(t, list):
            if len(t) != 1 or not allow_array:
                raise SchemaError(f"{where}: an array type is [TYPE], one element type")
            self.check_type(where, t[0], False)
            return
        if not isinstance(t, str):
            raise SchemaError(f"{where}: a type is a name or [NAME], not {t!r}")
        if t not in BUILTINS and t not in self.defs:
            raise SchemaError(f"{where}: unknown type '{t}'")
        if self.kind(t) in ("command", "event"):
            raise SchemaError(f"{where}: '{t}' is a {self.kind(t)}, not a type")

    def members(self, where, data):
        if not isinstance(data, dict):
            raise SchemaError(f"{where}: members must be an object")
        out = []
        for key, t in data.items():
            optional = key.startswith("*")
            name = key[1:] if optional else key
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", name):
                raise SchemaError(f"{where}: bad member name {key!r}")
            if any(c_name(m["name"]) == c_name(name) for m in out):
                raise SchemaError(f"{where}: member '{name}' clashes with another")
            self.check_type(f"{where} member '{name}'", t)
            out.append({"name": name, "type": t, "optional": optional})
        return out

    def struct_members(self, where, base):
        """A base: a struct's name (its members) or inline members."""
        if isinstance(base, str):
            if self.kind(base) != "struct":
                raise SchemaError(f"{where}: base '{base}' is not a struct")
            return self._normalize(base)["members"]
        return self.members(f"{where} base", base)

    def _normalize(self, name):
        if name in self.visiting:
            raise SchemaError(f"{self.defs[name][0]}: '{name}' contains itself")
        self.visiting.add(name)
        try:
            return self._normalize_def(name)
        finally:
            self.visiting.discard(name)

    def _normalize_def(self, name):
        where, kind, d = self.defs[name]
        where = f"{where}: {kind} '{name}'"
        if kind == "enum":
            values = d.get("data")
            if (not isinstance(values, list) or not values
                    or not all(isinstance(v, str) for v in values)):
                raise SchemaError(f"{where}: data must be a list of strings")
            if len(set(values)) != len(values):
                raise SchemaError(f"{where}: a value is listed twice")
            return {"meta": "enum", "name": name, "values": values}
        if kind == "struct":
            members = self.struct_members(where, d["base"]) if "base" in d else []
            own = self.members(where, d.get("data", {}))
            for m in own:
                if any(b["name"] == m["name"] for b in members):
                    raise SchemaError(f"{where}: member '{m['name']}' clashes with the base")
            return {"meta": "struct", "name": name, "members": members + own}
        if kind == "union":
            for key in ("base", "discriminator", "data"):
                if key not in d:
                    raise SchemaError(f"{where}: a union needs '{key}'")
            base = self.struct_members(where, d["base"])
            tag = d["discriminator"]
            tm = next((m for m in base if m["name"] == tag), None)
            if not tm or tm["optional"] or self.kind(tm["type"]) != "enum" or \
                    isinstance(tm["type"], list):
                raise SchemaError(f"{where}: discriminator '{tag}' must be a required enum "
                                  "member of the base")
            values = self.defs[tm["type"]][2]["data"]
            if not isinstance(d["data"], dict):
                raise SchemaError(f"{where}: data must map values to structs")
            variants = []
            for case, t in d["data"].items():
                if case not in values:
                    raise SchemaError(f"{where}: '{case}' is not a value of '{tm['type']}'")
                if not isinstance(t, str) or self.kind(t) != "struct":
                    raise SchemaError(f"{where}: branch '{case}' must be a struct")
                for m in self._normalize(t)["members"]:
                    if any(b["name"] == m["name"] for b in base):
                        raise SchemaError(f"{where}: branch '{case}' member '{m['name']}' "
                                          "clashes with the base")
                variants.append({"case": case, "type": t})
            return {"meta": "union", "name": name, "members": base, "tag": tag,
                    "variants": variants}
        if kind == "alternate":
            data = d.get("data")
            if not isinstance(data, dict) or len(data) < 2:
                raise SchemaError(f"{where}: an alternate needs at least two branches")
            seen, branches = {}, []
            for branch, t in data.items():
                self.check_type(f"{where} branch '{branch}'", t)
                jt = self.json_kind(t)
                if jt == "value":
                    raise SchemaError(f"{where}: branch '{branch}' cannot be 'any'")
                clash = {"int": {"int", "number"}, "number": {"int", "number"}}.get(jt, {jt})
                for other, ot in seen.items():
                    if ot in clash:
                        raise SchemaError(f"{where}: branches '{other}' and '{branch}' have "
                                          "the same JSON type")
                seen[branch] = jt
                branches.append({"name": branch, "type": t})
            return {"meta": "alternate", "name": name, "members": branches}
        members = self.members(where, d.get("data", {}))
        out = {"meta": kind, "name": name, "members": members}
        if kind == "command" and "returns" in d:
            self.check_type(f"{where} returns", d["returns"])
            out["returns"] = d["returns"]
        return out

    def json_kind(self, t):
        if isinstance(t, list):
            return "array"
        if t in BUILTINS:
            return BUILTINS[t][1]
        return {"enum": "string", "struct": "object", "union": "object",
                "alternate": "value"}[self.kind(t)]

    def normalized(self):
        return [self.norm[n] for n in self.order]

    def commands(self):
        return [d for d in self.normalized() if d["meta"] == "command"]


# ---- C output ----

def c_string_literal_lines(text, width=96):
    return ["    " + json.dumps(text[i:i + width]) for i in range(0, len(text), width)] or ['    ""']


def write_json(path, schema, symbol):
    text = json.dumps(schema.normalized(), separators=(",", ":"))
    with open(path, "w", encoding="utf-8") as f:
        f.write("/* Generated by qapi-gen.py from the QMP schema: do not edit. */\n")
        f.write("extern const char %s[];\n" % symbol)
        f.write("const char %s[] =\n" % symbol)
        f.write("\n".join(c_string_literal_lines(text)) + ";\n")


def member_c(schema, m):
    """(declarations, fill code) of one argument."""
    t, name, opt = m["type"], c_name(m["name"]), m["optional"]
    key = json.dumps(m["name"])
    what = f"'{m['name']}': " + (f"[{t[0]}]" if isinstance(t, list) else t)
    if isinstance(t, list) or schema.kind(t) in ("struct", "union", "alternate") or \
            t in ("any", "null"):
        return ([f"    json_t *{name}; /* {what}{', NULL if absent' if opt else ''} */"],
                [f"    a.{name} = json_object_get(args, {key});"])
    if t == "str" or schema.kind(t) == "enum":
        return ([f"    const char *{name}; /* {what}{', NULL if absent' if opt else ''} */"],
                [f"    a.{name} = json_string_value(json_object_get(args, {key}));"])
    ctype = BUILTINS[t][0]
    get = {"int64_t": "json_integer_value(v)", "double": "json_number_value(v)",
           "bool": "json_is_true(v)"}[ctype]
    decl = [f"    {ctype} {name}; /* {what} */"]
    fill = [f"    if ((v = json_object_get(args, {key}))) {{"]
    if opt:
        decl.insert(0, f"    bool has_{name};")
        fill.append(f"        a.has_{name} = true;")
    fill += [f"        a.{name} = {get};", "    }"]
    return decl, fill


def write_commands(h_path, c_path, schema):
    h = ["/* Generated by qapi-gen.py from the QMP schema: do not edit. */",
         "/*",
         " * Every QMP command's typed arguments and its handler's prototype.  The",
         " * dispatcher has validated the arguments against the schema before the",
         " * handler runs: required members are present with the right type, nothing",
         " * else is there.  Pointers borrow from the request (copy what outlives the",
         " * handler).  A handler returns the reply's \"return\" value (a new reference;",
         " * NULL means {}) or sets *errp; see qmp.h for deferred replies.",
         " */",
         "#ifndef SNAPVM_MONITOR_QAPI_COMMANDS_H",
         "#define SNAPVM_MONITOR_QAPI_COMMANDS_H",
         "",
         "#include <jansson.h>",
         "#include <stdbool.h>",
         "#include <stdint.h>",
         "",
         '#include "monitor/qmp.h"',
         ""]
    c = ["/* Generated by qapi-gen.py from the QMP schema: do not edit. */",
         '#include "monitor/qapi-commands.h"', ""]
    table = []
    for cmd in schema.commands():
        cn = c_name(cmd["name"])
        ret = cmd.get("returns")
        ret_doc = ("returns " + (f"[{ret[0]}]" if isinstance(ret, list) else ret)) if ret \
            else "returns {}"
        if cmd["members"]:
            decls, fills = [], []
            for m in cmd["members"]:
                d, f = member_c(schema, m)
                decls += d
                fills += f
            h += [f"/* {cmd['name']}; {ret_doc} */", f"struct qapi_args_{cn} {{"] + decls + ["};"]
            h += [f"json_t *qmp_{cn}(struct qmp_request *req, const struct qapi_args_{cn} *args,",
                  "        struct error **errp);", ""]
            needs_v = any("json_t *v" in x or "(v = " in x for x in fills)
            c += [f"static json_t *marshal_{cn}(struct qmp_request *req, json_t *args, "
                  "struct error **errp)", "{",
                  f"    struct qapi_args_{cn} a = {{0}};"]
            if needs_v:
                c.append("    json_t *v;")
            c += fills + [f"    return qmp_{cn}(req, &a, errp);", "}", ""]
        else:
            h += [f"/* {cmd['name']}: no arguments; {ret_doc} */",
                  f"json_t *qmp_{cn}(struct qmp_request *req, struct error **errp);", ""]
            c += [f"static json_t *marshal_{cn}(struct qmp_request *req, json_t *args, "
                  "struct error **errp)", "{", "    (void)args;",
                  f"    return qmp_{cn}(req, errp);", "}", ""]
        table.append(f'        {{"{cmd["name"]}", marshal_{cn}}},')
    h += ["/* Every command of the schema with its handler, in schema order; ends with {NULL}. */",
          "extern const struct qmp_command qapi_commands[];", "", "#endif"]
    c += ["const struct qmp_command qapi_commands[] = {"] + table + ["        {NULL, NULL},",
                                                                     "};"]
    with open(h_path, "w", encoding="utf-8") as f:
        f.write("\n".join(h) + "\n")
    with open(c_path, "w", encoding="utf-8") as f:
        f.write("\n".join(c) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", required=True)
    ap.add_argument("--symbol", default="qapi_schema_json")
    ap.add_argument("--commands-c")
    ap.add_argument("--commands-h")
    ap.add_argument("schema", nargs="+")
    opts = ap.parse_args()
    try:
        sources = []
        for path in opts.schema:
            sources += read_defs(path)
        schema = Schema(sources)
    except SchemaError as e:
        sys.exit(f"qapi-gen: {e}")
    write_json(opts.json, schema, opts.symbol)
    if opts.commands_c:
        write_commands(opts.commands_h, opts.commands_c, schema)


main()
