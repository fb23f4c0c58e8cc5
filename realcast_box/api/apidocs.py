"""Render the OpenAPI document as one self-contained HTML page for /api/docs.

The page has no scripts and loads nothing from other hosts, because a box
often runs on a LAN without internet access. Every text from the document
goes through html.escape.
"""

from __future__ import annotations

from html import escape
from typing import Any

METHODS = ("get", "post", "put", "patch", "delete", "head", "options")
# Schema keywords shown in the "Constraints" column, with their labels.
CONSTRAINTS = (
    ("minLength", "min length"),
    ("maxLength", "max length"),
    ("minimum", "minimum"),
    ("maximum", "maximum"),
    ("minItems", "min items"),
    ("maxItems", "max items"),
    ("pattern", "pattern"),
    ("format", "format"),
    ("default", "default"),
)
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto;
  padding: 0 1rem; line-height: 1.4; color: #1b1b1b; }
code, .path { font-family: ui-monospace, monospace; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; width: 100%; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left;
  vertical-align: top; }
th { background: #f2f2f2; }
section.operation { border-top: 1px solid #ddd; padding-top: 0.5rem; }
.method { display: inline-block; min-width: 4.5rem; font-weight: bold; }
"""


def render(document: dict[str, Any]) -> str:
    """Return the HTML page of ``document``, an OpenAPI 3.1 document."""
    info = document["info"]
    title = f"{info['title']} {info['version']}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        _paragraphs(info.get("description", "")),
        '<p>Machine-readable document: <a href="/api/openapi.json">'
        "/api/openapi.json</a> (OpenAPI "
        f"{escape(document['openapi'])}).</p>",
        _security_section(document),
        _contents(document),
    ]
    for tag in document.get("tags", []):
        parts.append(_tag_section(document, tag))
    parts.append(_schemas_section(document))
    parts.append("</body></html>")
    return "\n".join(parts)


def _paragraphs(text: str) -> str:
    blocks = [block.strip() for block in text.split("\n\n") if block.strip()]
    return "\n".join(f"<p>{escape(' '.join(block.split()))}</p>" for block in blocks)


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Return (method, path, operation) for every operation, in document order."""
    found = []
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                found.append((method, path, item[method]))
    return found


def _anchor(operation: dict[str, Any]) -> str:
    return "op-" + operation["operationId"]


def _contents(document: dict[str, Any]) -> str:
    rows = ["<h2>Endpoints</h2>", "<ul>"]
    for method, path, operation in _operations(document):
        rows.append(
            f'<li><a href="#{escape(_anchor(operation))}"><span class="method">'
            f'{method.upper()}</span> <span class="path">{escape(path)}</span>'
            f"</a> {escape(operation.get('summary', ''))}</li>"
        )
    rows.append("</ul>")
    return "\n".join(rows)


def _security_section(document: dict[str, Any]) -> str:
    schemes = document["components"].get("securitySchemes", {})
    rows = ["<h2>Authentication</h2>", "<ul>"]
    for name, scheme in schemes.items():
        rows.append(
            f"<li><code>{escape(name)}</code> (HTTP {escape(scheme['scheme'])}):"
            f" {escape(scheme.get('description', ''))}</li>"
        )
    rows.append("</ul>")
    return "\n".join(rows)


def _tag_section(document: dict[str, Any], tag: dict[str, Any]) -> str:
    parts = [f"<h2>{escape(tag['name'])}</h2>"]
    if tag.get("description"):
        parts.append(f"<p>{escape(tag['description'])}</p>")
    for method, path, operation in _operations(document):
        if tag["name"] in operation.get("tags", ()):
            parts.append(_operation_section(document, method, path, operation))
    return "\n".join(parts)


def _operation_section(
    document: dict[str, Any], method: str, path: str, operation: dict[str, Any]
) -> str:
    parts = [
        f'<section class="operation" id="{escape(_anchor(operation))}">',
        f'<h3><span class="method">{method.upper()}</span>'
        f' <span class="path">{escape(path)}</span></h3>',
        f"<p>{escape(operation.get('summary', ''))}</p>",
    ]
    if operation.get("description"):
        parts.append(_paragraphs(operation["description"]))
    parts.append(
        f"<p>Authentication: {escape(_security_text(document, operation))}</p>"
    )
    parameters = [
        *document["paths"][path].get("parameters", []),
        *operation.get("parameters", []),
    ]
    if parameters:
        parts.append(_parameters_table(parameters))
    body = operation.get("requestBody")
    if body is not None:
        schema = body["content"]["application/json"]["schema"]
        parts.append(
            "<h4>Request body (application/json)</h4>"
            f"<p>{_type_html(schema)}</p>" + _fields_table(_resolve(document, schema))
        )
    parts.append(_responses_table(document, operation["responses"]))
    parts.append("</section>")
    return "\n".join(parts)


def _security_text(document: dict[str, Any], operation: dict[str, Any]) -> str:
    requirements = operation.get("security", document.get("security", []))
    if not requirements:
        return "none"
    choices = []
    for requirement in requirements:
        for name, scopes in requirement.items():
            scope_text = f" with scope {', '.join(scopes)}" if scopes else ""
            choices.append(f"{name}{scope_text}")
    return " or ".join(choices)


def _parameters_table(parameters: list[dict[str, Any]]) -> str:
    rows = [
        "<h4>Parameters</h4><table>",
        "<tr><th>Name</th><th>In</th><th>Type</th><th>Required</th>"
        "<th>Constraints</th><th>Description</th></tr>",
    ]
    for parameter in parameters:
        schema = parameter.get("schema", {})
        rows.append(
            f"<tr><td><code>{escape(parameter['name'])}</code></td>"
            f"<td>{escape(parameter['in'])}</td><td>{_type_html(schema)}</td>"
            f"<td>{'yes' if parameter.get('required') else 'no'}</td>"
            f"<td>{escape(_constraints(schema))}</td>"
            f"<td>{escape(parameter.get('description', ''))}</td></tr>"
        )
    rows.append("</table>")
    return "\n".join(rows)


def _responses_table(document: dict[str, Any], responses: dict[str, Any]) -> str:
    rows = [
        "<h4>Responses</h4><table>",
        "<tr><th>Status</th><th>Description</th><th>Body</th><th>Headers</th></tr>",
    ]
    for status, response in responses.items():
        response = _resolve(document, response)
        bodies = []
        for media_type, media in response.get("content", {}).items():
            schema = media.get("schema")
            shown = f": {_type_html(schema)}" if schema else ""
            bodies.append(f"{escape(media_type)}{shown}")
        header_names = ", ".join(response.get("headers", {}))
        rows.append(
            f"<tr><td>{escape(status)}</td>"
            f"<td>{escape(response.get('description', ''))}</td>"
            f"<td>{'<br>'.join(bodies) or 'none'}</td>"
            f"<td>{escape(header_names)}</td></tr>"
        )
    rows.append("</table>")
    return "\n".join(rows)


def _schemas_section(document: dict[str, Any]) -> str:
    parts = ["<h2>Schemas</h2>"]
    for name, schema in document["components"].get("schemas", {}).items():
        parts.append(f'<h3 id="schema-{escape(name)}">{escape(name)}</h3>')
        if schema.get("description"):
            parts.append(f"<p>{escape(schema['description'])}</p>")
        parts.append(_fields_table(schema))
    return "\n".join(parts)


def _fields_table(schema: dict[str, Any]) -> str:
    properties = schema.get("properties")
    if not properties:
        return f"<p>{_type_html(schema)}</p>"
    required = set(schema.get("required", ()))
    rows = [
        "<table>",
        "<tr><th>Field</th><th>Type</th><th>Required</th><th>Constraints</th>"
        "<th>Description</th></tr>",
    ]
    for name, field in properties.items():
        rows.append(
            f"<tr><td><code>{escape(name)}</code></td><td>{_type_html(field)}</td>"
            f"<td>{'yes' if name in required else 'no'}</td>"
            f"<td>{escape(_constraints(field))}</td>"
            f"<td>{escape(field.get('description', ''))}</td></tr>"
        )
    rows.append("</table>")
    if schema.get("additionalProperties") is False:
        rows.append("<p>Other fields are rejected with 400.</p>")
    return "\n".join(rows)


def _resolve(document: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    """Follow a local $ref such as #/components/responses/NotFound."""
    while "$ref" in value:
        target: Any = document
        for part in value["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        value = target
    return value


def _type_html(schema: dict[str, Any]) -> str:
    """Return the type of ``schema`` as HTML, linking to named schemas."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f'<a href="#schema-{escape(name)}">{escape(name)}</a>'
    if "anyOf" in schema:
        return " or ".join(_type_html(choice) for choice in schema["anyOf"])
    if "const" in schema:
        return f"<code>{escape(repr(schema['const']))}</code>"
    kinds = schema.get("type", "any")
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    type_names = []
    for kind in kinds:
        if kind == "array" and "items" in schema:
            type_names.append(f"array of {_type_html(schema['items'])}")
        else:
            type_names.append(escape(kind))
    text = " or ".join(type_names)
    if "enum" in schema:
        values = ", ".join(str(value) for value in schema["enum"])
        text += f" (one of: {escape(values)})"
    return text


def _constraints(schema: dict[str, Any]) -> str:
    return "; ".join(
        f"{label} {schema[keyword]}"
        for keyword, label in CONSTRAINTS
        if keyword in schema
    )
