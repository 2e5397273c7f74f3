"""A griffe extension that reads Keras-style docstrings for the docs site.

keras_regkit's docstrings follow Keras's conventions, two of which
griffe's Google-style parser reads otherwise than meant:

- `Example:`, a blank line, then doctest lines at the same indentation as
  the title. Griffe reads that as an admonition of prose, and Markdown
  would render the `>>>` lines as nested quotes. The extension indents the
  block under an `Examples:` title, so it parses as an Examples section
  (highlighted Python sessions).
- `Call arguments:`, the arguments of a layer's `call`. Griffe reads an
  unknown section as an admonition, its items run together. The extension
  turns it into a parameters table titled "Call arguments:".

It also documents a class attribute `name = staticmethod(function)`
(`WeightAveraging.recompute_batch_norm`) as the static method it is, with
the function's signature and docstring: griffe sees only an attribute.

Only the docs site sees the change: the source is left as it is, and the
doctests run from it unchanged. mkdocs.yml loads this file through the
mkdocstrings handler's `extensions` option.
"""

import re

import griffe

_EXAMPLE_TITLE = re.compile(r"^(?P<indent> *)Examples?:\s*$")
_STATICMETHOD = re.compile(r"staticmethod\((?P<name>\w+)\)")
_ITEM = re.compile(r"^(?P<name>\*{0,2}\w+):\s*(?P<description>.*)$")


def _indent_examples(text):
    """Indents the doctest block below an `Example:` title and a blank line."""
    lines = text.split("\n")
    for index, line in enumerate(lines[:-2]):
        match = _EXAMPLE_TITLE.match(line)
        if not match or lines[index + 1].strip():
            continue
        indent = match["indent"]
        if not lines[index + 2].startswith(indent + ">>>"):
            continue
        # The block runs to the end of the docstring (every example of
        # keras_regkit's is its docstring's last section).
        body = [
            "    " + below if below.strip() else ""
            for below in lines[index + 2 :]
        ]
        # Griffe knows "Examples", not "Example" (an admonition to it).
        title = f"{indent}Examples:"
        return "\n".join([*lines[:index], title, *body])
    return text


def _call_parameters(cls):
    """The parameters of `cls.call` (inherited or not), by name."""
    try:
        call = cls.all_members.get("call")
        call = call.final_target if call is not None and call.is_alias else call
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return {}
    if call is None or not call.is_function:
        return {}
    return {parameter.name: parameter for parameter in call.parameters}


def _call_arguments(section, obj):
    """A parameters section titled "Call arguments:" from the admonition.

    Annotations and defaults come from the class's `call`, where it has
    one: `training` is optional there, whatever the table would assume.
    """
    signature = _call_parameters(obj) if obj.is_class else {}
    items = []
    for line in section.value.description.split("\n"):
        match = _ITEM.match(line)
        if match:
            items.append([match["name"], [match["description"]]])
        elif items and line.strip():
            items[-1][1].append(line.strip())
    parameters = []
    for name, text in items:
        found = signature.get(name)
        parameters.append(
            griffe.DocstringParameter(
                name,
                description=" ".join(text),
                annotation=found.annotation if found else None,
                value=found.default if found else None,
            )
        )
    return griffe.DocstringSectionParameters(
        parameters, title="Call arguments:"
    )


def _objects(obj):
    """`obj` and every object defined inside it (aliases left out)."""
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)


def _static_method(cls, attribute):
    """The function `attribute = staticmethod(f)` holds, as a method."""
    match = _STATICMETHOD.fullmatch(str(attribute.value or ""))
    if not match or match["name"] not in cls.module.members:
        return None
    try:
        function = cls.module.members[match["name"]].final_target
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
    if not function.is_function or function.docstring is None:
        return None
    method = griffe.Function(
        attribute.name,
        lineno=attribute.lineno,
        endlineno=attribute.endlineno,
        parameters=function.parameters,
        returns=function.returns,
        docstring=griffe.Docstring(
            function.docstring.value,
            lineno=function.docstring.lineno,
            endlineno=function.docstring.endlineno,
            parser=function.docstring.parser,
            parser_options=function.docstring.parser_options,
        ),
    )
    method.labels.add("staticmethod")
    return method


class KerasDocstrings(griffe.Extension):
    """Reads Keras-style docstrings as meant (see the module docstring)."""

    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = _indent_examples(obj.docstring.value)

    def on_package(self, *, pkg, **kwargs):
        for obj in list(_objects(pkg)):
            if obj.is_class:
                for name, member in list(obj.members.items()):
                    if not member.is_alias and member.is_attribute:
                        method = _static_method(obj, member)
                        if method is not None:
                            obj.set_member(name, method)
            docstring = obj.docstring
            if docstring is None or "Call arguments:" not in docstring.value:
                continue
            sections = docstring.parsed
            for index, section in enumerate(sections):
                if (
                    section.kind is griffe.DocstringSectionKind.admonition
                    and section.title == "Call arguments"
                ):
                    sections[index] = _call_arguments(section, obj)
