"""The condition language (docs/usage.md#conditions), through parse_condition / Condition.evaluate."""
import dataclasses
import sys

import pytest

from engine.conditions import (
    MAX_CONDITION_LENGTH,
    MAX_NESTING_DEPTH,
    ConditionContext,
    ConditionError,
    parse_condition,
)


def holds(text: str, **context) -> bool:
    return parse_condition(text).evaluate(ConditionContext(**context))


def error_of(text) -> ConditionError:
    with pytest.raises(ConditionError) as caught:
        parse_condition(text)
    return caught.value


# --- atoms ------------------------------------------------------------------------------------------------------


def test_has_tool_calls_follows_the_pending_tool_calls_of_the_last_ai_message():
    assert holds("has_tool_calls", pending_tool_calls=2)
    assert not holds("has_tool_calls", pending_tool_calls=0)


def test_no_tool_calls_is_the_opposite_of_has_tool_calls():
    assert holds("no_tool_calls", pending_tool_calls=0)
    assert not holds("no_tool_calls", pending_tool_calls=1)


def test_has_errors_follows_the_context():
    assert holds("has_errors", has_errors=True)
    assert not holds("has_errors", has_errors=False)


@pytest.mark.parametrize(
    "op, executed, expected",
    [
        ("==", 3, True),
        ("==", 4, False),
        ("!=", 4, True),
        ("!=", 3, False),
        ("<", 2, True),
        ("<", 3, False),
        ("<=", 3, True),
        ("<=", 4, False),
        (">", 4, True),
        (">", 3, False),
        (">=", 3, True),
        (">=", 2, False),
    ],
)
def test_tool_calls_compares_the_tool_calls_executed_so_far(op, executed, expected):
    assert holds(f"tool_calls {op} 3", tool_calls=executed, pending_tool_calls=0) is expected


def test_tool_calls_does_not_look_at_pending_tool_calls():
    assert not holds("tool_calls > 0", tool_calls=0, pending_tool_calls=5)


def test_operators_need_no_surrounding_spaces():
    assert holds("tool_calls>=3", tool_calls=3)
    assert holds("variable n!=1", variables={"n": 2})


def test_tool_calls_accepts_floats_negative_numbers_and_references():
    assert holds("tool_calls < 2.5", tool_calls=2)
    assert holds("tool_calls > -1", tool_calls=0)
    assert holds("tool_calls >= config.max_tool_calls", tool_calls=10, config={"max_tool_calls": 10})
    assert holds("tool_calls < var.budget", tool_calls=1, variables={"budget": 2})


def test_tool_calls_refuses_a_non_numeric_literal():
    for text in ['tool_calls == "3"', "tool_calls == true", "tool_calls == null"]:
        assert "number" in error_of(text).message


@pytest.mark.parametrize(
    "text, variables, expected",
    [
        ("variable count == 3", {"count": 3}, True),
        ("variable count == 3", {"count": 3.0}, True),
        ("variable count < 3.5", {"count": 3}, True),
        ("variable count >= 3", {"count": 2}, False),
        ('variable name == "bob"', {"name": "bob"}, True),
        ('variable name != "bob"', {"name": "alice"}, True),
        ('variable name < "bob"', {"name": "alice"}, True),
        ('variable name > "bob"', {"name": "alice"}, False),
        ("variable done == true", {"done": True}, True),
        ("variable done == false", {"done": True}, False),
        ("variable done != false", {"done": True}, True),
        ("variable nothing == null", {"nothing": None}, True),
        ("variable missing == null", {}, True),
        ("variable missing != null", {}, False),
    ],
)
def test_variable_compares_literals(text, variables, expected):
    assert holds(text, variables=variables) is expected


def test_variable_names_may_be_quoted_to_hold_any_character():
    assert holds('variable "user name" == "Zoë"', variables={"user name": "Zoë"})


def test_variable_names_may_contain_dots_dashes_and_colons():
    assert holds("variable step.count-1:a == 1", variables={"step.count-1:a": 1})


@pytest.mark.parametrize(
    "text, variables",
    [
        ('variable n == "1"', {"n": 1}),  # number vs string
        ("variable n == 1", {"n": True}),  # bools are not numbers
        ("variable n == true", {"n": 1}),
        ("variable n == 0", {"n": None}),
        ("variable n == 0", {}),  # a missing variable is null
        ('variable n == "[1]"', {"n": [1]}),
    ],
)
def test_values_of_different_kinds_are_never_equal(text, variables):
    assert not holds(text, variables=variables)
    assert holds(text.replace("==", "!="), variables=variables)


@pytest.mark.parametrize("op", ["<", "<=", ">", ">="])
def test_values_of_different_kinds_are_never_ordered(op):
    assert not holds(f'variable n {op} "5"', variables={"n": 5})
    assert not holds(f"variable n {op} 5", variables={"n": "5"})
    assert not holds(f"variable n {op} 0", variables={"n": True})
    assert not holds(f"variable n {op} 0", variables={})


@pytest.mark.parametrize("op", ["<", "<=", ">", ">="])
def test_booleans_and_null_are_not_ordered(op):
    assert not holds(f"variable n {op} true", variables={"n": True})
    assert not holds(f"variable n {op} null", variables={"n": None})


def test_lists_and_objects_compare_for_equality_with_references():
    variables = {"a": [1, 2], "b": [1, 2], "c": {"k": 1}}
    assert holds("variable a == var.b", variables=variables)
    assert not holds("variable a == var.c", variables=variables)
    assert not holds("variable a < var.b", variables=variables)


def test_references_read_config_and_variables():
    context = {"variables": {"count": 4, "limit": 5}, "config": {"max_tool_calls": 4, "mode": "fast"}}
    assert holds("variable count == config.max_tool_calls", **context)
    assert holds("variable count < var.limit", **context)
    assert holds('variable mode_copy == config.mode', variables={"mode_copy": "fast"}, config={"mode": "fast"})


def test_a_missing_reference_is_null():
    assert holds("variable x == config.nope", variables={"x": None})
    assert holds("variable x == var.nope", variables={"x": None})
    assert not holds("variable x == var.nope", variables={"x": 0})


def test_message_contains_is_case_insensitive():
    assert holds('message contains "ERROR"', last_message="an error happened")
    assert holds('message contains "straße"', last_message="STRASSE ist lang")
    assert not holds('message contains "done"', last_message="still working")


def test_message_contains_handles_escaped_quotes_and_backslashes():
    assert holds(r'message contains "say \"hi\""', last_message='they say "hi" to all')
    assert holds(r'message contains "C:\\temp"', last_message=r"saved to c:\TEMP\file")


def test_message_contains_the_empty_string_always_holds():
    assert holds('message contains ""', last_message="")


def test_loop_continue_asks_the_context_about_that_loop_node():
    asked = []

    def loop_continue(node_id: str) -> bool:
        asked.append(node_id)
        return node_id == "retry"

    assert holds("loop retry continue", loop_continue=loop_continue)
    assert not holds("loop other continue", loop_continue=loop_continue)
    assert asked == ["retry", "other"]


def test_loop_refs_lists_the_loop_nodes_a_condition_names():
    condition = parse_condition("loop a continue and (loop b.2 continue or not loop a continue) or has_errors")
    assert condition.loop_refs == frozenset({"a", "b.2"})
    assert parse_condition("has_errors").loop_refs == frozenset()


def test_loop_node_ids_may_start_with_a_digit():
    assert parse_condition("loop 1st continue").loop_refs == {"1st"}
    assert parse_condition("loop 42 continue").loop_refs == {"42"}


# --- combinators -------------------------------------------------------------------------------------------------


def test_and_or_not_combine_atoms():
    assert holds("has_errors and has_tool_calls", has_errors=True, pending_tool_calls=1)
    assert not holds("has_errors and has_tool_calls", has_errors=True, pending_tool_calls=0)
    assert holds("has_errors or has_tool_calls", has_errors=False, pending_tool_calls=1)
    assert not holds("has_errors or has_tool_calls")
    assert holds("not has_errors")
    assert holds("not not has_errors", has_errors=True)


def test_not_binds_tighter_than_and_which_binds_tighter_than_or():
    # has_errors or (has_tool_calls and (not tool_calls > 1))
    text = "has_errors or has_tool_calls and not tool_calls > 1"
    assert holds(text, has_errors=True, pending_tool_calls=0, tool_calls=5)
    assert holds(text, has_errors=False, pending_tool_calls=1, tool_calls=0)
    assert not holds(text, has_errors=False, pending_tool_calls=1, tool_calls=5)
    # (not has_errors) and has_tool_calls, not: not (has_errors and has_tool_calls)
    assert not holds("not has_errors and has_tool_calls", has_errors=False, pending_tool_calls=0)


def test_parentheses_override_precedence():
    context = {"has_errors": True, "pending_tool_calls": 0, "tool_calls": 0}
    assert holds("has_errors or has_tool_calls and tool_calls > 1", **context)
    assert not holds("(has_errors or has_tool_calls) and tool_calls > 1", **context)
    assert holds("not (has_tool_calls and has_errors)", **context)
    assert holds("((((has_errors))))", **context)


def test_and_and_or_short_circuit():
    asked = []

    def loop_continue(node_id: str) -> bool:
        asked.append(node_id)
        return True

    assert holds("has_errors or loop a continue", has_errors=True, loop_continue=loop_continue)
    assert not holds("has_errors and loop b continue", has_errors=False, loop_continue=loop_continue)
    assert asked == []


def test_long_chains_do_not_nest_deeply():
    text = " and ".join(["no_tool_calls"] * 50)
    assert len(text) < MAX_CONDITION_LENGTH
    assert holds(text)


def test_whitespace_is_free():
    assert holds("  \t( has_errors\n)\r\n", has_errors=True)


def test_a_parsed_condition_is_immutable_and_reusable():
    condition = parse_condition("tool_calls < 2")
    with pytest.raises(dataclasses.FrozenInstanceError):
        condition.root = None  # type: ignore[misc]
    assert condition.evaluate(ConditionContext(tool_calls=1))
    assert not condition.evaluate(ConditionContext(tool_calls=2))
    assert parse_condition("tool_calls < 2") == condition


def test_the_context_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ConditionContext().tool_calls = 3  # type: ignore[misc]


# --- errors ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, position",
    [
        ("", 0),
        ("   ", 0),
        ("has_tools", 0),
        ("HAS_ERRORS", 0),
        ("has_errors AND has_tool_calls", 11),
        ("has_errors and", 14),
        ("has_errors has_tool_calls", 11),
        ("(has_errors", 11),
        ("has_errors)", 10),
        (")", 0),
        ("()", 1),
        ("not", 3),
        ("tool_calls", 10),
        ("tool_calls = 3", 11),
        ("tool_calls => 3", 11),
        ("tool_calls === 3", 13),
        ("tool_calls == ", 14),
        ("tool_calls == abc", 14),
        ("tool_calls == 3abc", 14),
        ("variable == 3", 9),
        ("variable x", 10),
        ("variable x == foo", 14),
        ("variable x == config.", 21),
        ("variable x == var.", 18),
        ('variable "" == 1', 9),
        ("message", 7),
        ("message has \"x\"", 8),
        ("message contains x", 17),
        ('message contains "unterminated', 17),
        (r'message contains "bad \n escape"', 22),
        ("loop continue", 13),
        ("loop x", 6),
        ("loop x stop", 7),
        ("loop -x continue", 5),
        ("has_errors && has_tool_calls", 11),
        ("has_errors; drop table", 10),
    ],
)
def test_it_rejects_malformed_conditions_saying_where(text, position):
    error = error_of(text)
    assert error.position == position, error.message
    assert error.message
    assert f"character {position}" in str(error)


def test_a_condition_error_is_a_value_error():
    assert issubclass(ConditionError, ValueError)


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('rm -rf /')",
        "eval('1')",
        "has_errors or __import__('os')",
        "{{ has_errors }}",
        "has_errors; import os",
        "lambda: True",
        "tool_calls == 1 if True else 0",
        "`has_errors`",
        "tool_calls == 0x10",
        "tool_calls == 1e3",
    ],
)
def test_it_rejects_python_injection(text):
    with pytest.raises(ConditionError):
        parse_condition(text)


def test_reference_names_are_only_looked_up_never_executed():
    # A reference to a dunder name is just a missing key: nothing of Python is reachable.
    condition = parse_condition("variable x == var.__class__")
    assert condition.evaluate(ConditionContext(variables={"x": None}))


@pytest.mark.parametrize("text", ["(" * 500, "(" * 450 + "has_errors" + ")" * 450, "not " * 240 + "has_errors"])
def test_it_refuses_deep_nesting_with_a_clear_error(text):
    error = error_of(text)
    assert "nested" in error.message
    assert str(MAX_NESTING_DEPTH) in error.message


def test_nesting_up_to_the_limit_is_fine():
    text = "(" * MAX_NESTING_DEPTH + "has_errors" + ")" * MAX_NESTING_DEPTH
    assert holds(text, has_errors=True)
    assert holds("not " * MAX_NESTING_DEPTH + "has_errors", has_errors=True)
    with pytest.raises(ConditionError):
        parse_condition("(" * (MAX_NESTING_DEPTH + 1) + "has_errors" + ")" * (MAX_NESTING_DEPTH + 1))


def test_deep_nesting_is_refused_even_with_a_low_recursion_limit():
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(300)
    try:
        error_of("(" * 400)
        assert holds("(" * MAX_NESTING_DEPTH + "has_errors" + ")" * MAX_NESTING_DEPTH, has_errors=True)
    finally:
        sys.setrecursionlimit(limit)


def test_500_nested_parentheses_are_refused_whatever_the_reason():
    with pytest.raises(ConditionError):
        parse_condition("(" * 500 + "has_errors" + ")" * 500)


def test_it_refuses_conditions_longer_than_the_limit():
    error = error_of('message contains "' + "a" * 10_000 + '"')
    assert str(MAX_CONDITION_LENGTH) in error.message
    assert error_of("has_errors or " * 800 + "has_errors").message.startswith("condition is longer")


def test_a_condition_at_the_length_limit_parses():
    text = 'message contains "' + "a" * (MAX_CONDITION_LENGTH - 19) + '"'
    assert len(text) == MAX_CONDITION_LENGTH
    assert holds(text, last_message="a" * MAX_CONDITION_LENGTH)


@pytest.mark.parametrize("value", [None, 3, b"has_errors", ["has_errors"], {"x": 1}])
def test_it_rejects_non_strings(value):
    assert error_of(value).position is None


def test_unicode_is_fine_inside_strings_and_refused_outside():
    assert holds('message contains "日本語 ✓"', last_message="答え: 日本語 ✓ です")
    assert holds('variable "名前" == "Zoë"', variables={"名前": "Zoë"})
    assert error_of("variable 名前 == 1").position == 9
    assert error_of("has_errors ≥ 1").position == 11


def test_unicode_whitespace_separates_tokens():
    assert holds("has_errors\u00a0and\u2003has_errors", has_errors=True)


def test_control_characters_and_nul_bytes_are_rejected():
    assert error_of("has_errors\x00").position == 10
    assert error_of("\x1b[31mhas_errors").position == 0
