"""Writes of workflows, by concern: templates, definitions, runs, schedules, recovery, costs (re-pricing)."""
