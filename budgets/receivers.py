"""A budget made, changed or deleted: every process asks afresh whether any budget is active (budgets_matching's
memo in core.cache.hot_reads)."""
from django.db.models.signals import post_delete, post_save

from budgets.models import Budget
from core.cache import hot_reads

post_save.connect(hot_reads.changed, sender=Budget, dispatch_uid="hot_reads_budget_saved")
post_delete.connect(hot_reads.changed, sender=Budget, dispatch_uid="hot_reads_budget_deleted")
