"""Domain signals of conversations, sent by its services inside their transaction: news for the apps above
(analytics keeps its usage rollups with them). The conversation's own totals are kept by the services themselves
(conversations.services), in the statement that locks its row."""
from django.dispatch import Signal

# sender=Message class; kwargs: message (message.conversation: the conversation as it left it), actor
message_saved = Signal()
# sender=Message class; kwargs: message (already deleted, fields intact), actor
message_deleted = Signal()
# sender=Document class; kwargs: document (just made), actor, api_key (the API key the request came with, or None)
document_created = Signal()
# sender=Document class; kwargs: document (about to be deleted, its cascades with it), actor
document_deleting = Signal()
# sender=Conversation class; kwargs: conversation_id. A receiver answers True while something of an app above (a run
# in progress) still writes to the conversation: it cannot be deleted then.
conversation_busy = Signal()
