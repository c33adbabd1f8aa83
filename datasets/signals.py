"""Domain signals of datasets: questions for the apps above, which datasets does not import."""
from django.dispatch import Signal

# sender=Dataset class; kwargs: dataset_id. A receiver answers what of an app above still reads the dataset's items
# (an experiment in progress: a sentence naming it), or None: the dataset and its items are not deleted meanwhile.
dataset_busy = Signal()
