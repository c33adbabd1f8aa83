"""Domain signals of workflow runs (sent by services inside their transaction)."""
from django.dispatch import Signal

# sender=WorkflowExecution class; kwargs: execution (terminal, with final totals)
execution_finished = Signal()

# The cost of LLM calls of an ended run changed (re-pricing: workflows.services.costs). sender=WorkflowExecution
# class; kwargs: execution (terminal), calls: one dict per (provider, model) with keys provider, model and cost (the
# change: a Decimal, negative when the price fell). A run still going books its calls' new cost when it ends.
usage_repriced = Signal()
