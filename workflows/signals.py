"""Domain signals of workflow runs (sent by services inside their transaction)."""
from django.dispatch import Signal

# sender=WorkflowExecution class; kwargs: execution (terminal, with final totals)
execution_finished = Signal()
