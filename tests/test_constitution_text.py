"""The constitution as the text a model reads: `Constitution.render()`, and the self teacher's context
prompt built from the real default constitution (readable text, never a Python repr)."""

import pytest

from teachwhy.constitution.loader import load_constitution
from teachwhy.teachers import constitution_text, get_teacher
from teachwhy.teachers.self_distill import WHY_FIRST


def test_render_shows_every_principle_in_full():
    c = load_constitution()
    text = c.render()
    assert text.startswith(f"# Constitution: {c.name}\n")
    for i, p in enumerate(c.principles, 1):
        assert f"## {i}. {p.name[0].upper()}{p.name[1:]}\n" in text
        assert p.statement in text and f"Why: {p.rationale}" in text
        assert f"Rules out: {'; '.join(p.rules_out)}." in text
        assert f"Rules in: {'; '.join(p.rules_in)}." in text
    assert "Principle(" not in text and "rules_out=" not in text and "source=" not in text


def test_a_users_constitution_renders_the_same_way(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("name: shop floor\nprinciples:\n"
                 "  - id: candour\n    statement: Tell the crew what I see.\n"
                 "    rationale: Safety depends on it.\n"
                 "    rules_out: [hiding a fault.]\n    rules_in: [reporting near misses]\n")
    assert load_constitution(f).render() == (
        "# Constitution: shop floor\n\n## 1. Candour\n\nTell the crew what I see.\n\n"
        "Why: Safety depends on it.\n\nRules out: hiding a fault.\nRules in: reporting near misses.\n")
    assert constitution_text(f) == constitution_text(load_constitution(f))  # a path is loaded, not read raw


def test_self_teacher_context_holds_the_default_constitution_as_text(tmp_path):
    c = load_constitution()
    teacher = get_teacher("self", c, "smollm2-135m", tmp_path)
    context = teacher.context
    assert context.startswith(WHY_FIRST) and c.render().strip() in context
    assert all(p.statement in context for p in c.principles)
    assert all(p.rationale in context for p in c.principles)
    assert "Principle(" not in context and "principles=(" not in context and "rules_out=(" not in context
    assert context.count("# Constitution") == 1


def test_constitution_text_takes_no_arbitrary_object():
    assert constitution_text("be good") == "be good"  # text is used as it is
    with pytest.raises(TypeError, match="constitution must be"):
        constitution_text(object())
