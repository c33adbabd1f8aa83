"""Domain signals of workflow runs (sent by services inside their transaction)."""
from django.dispatch import Signal

# A run ended, in the transaction that ends it. sender=WorkflowExecution class; kwargs: execution (terminal, with
# final totals); messages: the run's messages (its user message if any, its assistant message if any); calls: one
# dict per (provider, model) of its LLM calls with keys provider, model, llm_calls, prompt_tokens,
# completion_tokens, total_tokens, cached_prompt_tokens, reasoning_tokens, cost.
execution_finished = Signal()

# A run is ending: sent in the transaction that ends it, just before its last write, with execution_finished's
# kwargs. Receivers return the statements [(sql, params), ...] that book the run in aggregates of theirs, in the
# order to run them; they ride on that write (core.db.statements_run: one statement on PostgreSQL), so the shared
# rows they lock are held for one round trip, to the commit.
execution_ending = Signal()

# The cost of LLM calls of an ended run changed (re-pricing: workflows.services.costs). sender=WorkflowExecution
# class; kwargs: execution (terminal), calls: one dict per (provider, model) with keys provider, model and cost (the
# change: a Decimal, negative when the price fell). A run still going books its calls' new cost when it ends.
usage_repriced = Signal()

# A run is about to be written (workflows.services.runs.run_write, before its transaction): sender=WorkflowExecution
# class; kwargs: execution (not saved yet; its api_key the key the request authenticated with, or None), models: the
# (provider, model) pairs the run may call, admitted: whether its entry point admitted its key already (the gateway,
# which answers with the key's x-ratelimit-* headers). A receiver refuses the run by raising a ChatterError (or DRF's
# Throttled): nothing is written. The limits of a key hold this way on every surface that starts runs
# (gateway.receivers).
execution_writing = Signal()
