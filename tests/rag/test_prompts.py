"""Prompt templates: declared variables checked against the text, versions, clear errors."""

from __future__ import annotations

import pytest

from lamina.core.errors import NotFound
from lamina.core.workspace import Workspace
from lamina.rag import prompts


def test_templates_are_versioned_and_render_their_declared_variables(workspace: Workspace) -> None:
    first = prompts.save(workspace, "greet", "Hello {{ name }}{% for t in tags %} #{{ t }}{% endfor %}")
    assert first.ref == "greet@v1" and first.variables == ("name", "tags")
    assert prompts.save(workspace, "greet", first.text).ref == "greet@v1"  # unchanged: same version
    second = prompts.save(workspace, "greet", "Hi {{ name }}", ["name"])
    assert second.ref == "greet@v2" and prompts.load(workspace, "greet").ref == "greet@v2"
    assert prompts.load(workspace, "greet@v1").render(name="Ada", tags=["x"]) == "Hello Ada #x"
    builtin = prompts.load(workspace, "rag-answer")  # recorded on first use
    assert builtin.ref == "rag-answer@v1" and set(builtin.variables) == {"question", "sources"}


def test_bad_templates_and_variables_get_one_clear_error_each(workspace: Workspace) -> None:
    with pytest.raises(prompts.TemplateError, match="uses undeclared name"):
        prompts.save(workspace, "t", "{{ name }}", ["question"])
    with pytest.raises(prompts.TemplateError, match="does not parse"):
        prompts.save(workspace, "t", "{% for x in %}")
    template = prompts.save(workspace, "t", "{{ a }} {{ b }}")
    with pytest.raises(prompts.MissingVariable, match="needs b") as missing:
        template.render(a=1)
    assert missing.value.http_status == 400
    with pytest.raises(prompts.TemplateError, match="no variable c"):
        template.render(a=1, b=2, c=3)
    with pytest.raises(NotFound, match="no prompt template 'nope'"):
        prompts.load(workspace, "nope")
    sneaky = prompts.save(workspace, "sneaky", "{{ a.__class__.__mro__ }}")
    with pytest.raises(prompts.TemplateError, match="unsafe"):  # the sandbox refuses reaching into Python
        sneaky.render(a="x")
