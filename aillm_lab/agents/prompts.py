"""Every text the agents send a model, in one place, so prompts are read and changed as data."""

from __future__ import annotations

REACT_SYSTEM = (
    "You are a careful assistant that solves the user's task step by step. Use the tools "
    "when they help: call one or more tools, read their results, then continue. If a tool "
    "reports an error, fix the call or try another approach. When you know the answer, reply "
    "with the final answer as plain text and call no tool.")

OUTPUT_NOTE = (
    "Give your final answer by calling the `{tool}` tool with arguments that match its "
    "schema; do not answer in plain text.")

FINAL_TOOL_DESCRIPTION = "Submit the final answer. Call this once, when the task is done."

MEMORY_NOTE = "Things you remember that may be relevant:\n{memories}"

FACTS_SYSTEM = (
    "You keep an assistant's long-term memory. From a finished task, pick the facts worth "
    "remembering for future tasks: about the user, their data, their preferences, or results "
    "they will need again. Each fact is one short, self-contained sentence.")

FACTS_REQUEST = (
    "Task: {task}\n\nFinal answer: {answer}\n\nList at most {limit} facts worth remembering, "
    "one per line, each starting with \"- \". If nothing is worth remembering, reply NONE.")

REPEATED = (
    "{result}\n(That is the result {tool} gave before for the same arguments; it was not run "
    "again. Use it: call another tool, or give the final answer.)")

EMPTY_REPLY = "Your reply was empty. Call a tool, or give the final answer as text."

BAD_OUTPUT = (
    "Your final answer does not match the required schema: {error}. Call `{tool}` again "
    "with valid arguments.")

ACCEPTED = "Final answer accepted."

GAVE_UP = "the model failed {count} times in a row to make a valid call or answer; last: {error}"

MAX_STEPS = "stopped after {steps} steps (max_steps) without a final answer"

TIMEOUT = "stopped after {seconds} s (max_seconds)"

BUDGET = "stopped by the budget (max_cost_usd={cap}): {error}"

CANCELLED = "cancelled ({how})"

MONITOR_SUMMARY_SYSTEM = (
    "You watch an LLM lab's health metrics. In at most three short sentences, say what "
    "changed between the two readings and what most likely explains the alerts. Plain text, "
    "no lists.")
