"""workflows listens to the news of the apps below it (signals go up): when a user's access ends (or a login
session's), their open websockets (workflows.consumers) are closed, in every process
(workflows.realtime.access_end_on_commit); a
conversation with a run in progress is busy (it cannot be deleted); a template written renews the memo of hot reads."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from conversations.models import Conversation
from conversations.signals import conversation_busy
from core.cache import hot_reads
from keys.models import ApiToken
from keys.signals import api_key_changed
from workflows.models import WorkflowTemplate
from workflows.realtime import access_end_on_commit, session_mark
from workflows.selectors import conversation_has_run_in_progress

# A template made, changed or deleted: every process reads templates afresh at its next run (workflows.selectors.
# template_get's memo, core.cache.hot_reads).
post_save.connect(hot_reads.changed, sender=WorkflowTemplate, dispatch_uid="hot_reads_template_saved")
post_delete.connect(hot_reads.changed, sender=WorkflowTemplate, dispatch_uid="hot_reads_template_deleted")


@receiver(api_key_changed, sender=ApiToken, dispatch_uid="workflows_sockets_of_revoked_key")
def sockets_of_revoked_key_close(sender, *, action, token, **kwargs) -> None:
    if action == "api_key.revoked":
        access_end_on_commit(user_id=token.user_id, key=str(token.uid))


# The admin deletes keys and deactivates users through the models themselves: no service of ours sends news of it.
@receiver(post_delete, sender=ApiToken, dispatch_uid="workflows_sockets_of_deleted_key")
def sockets_of_deleted_key_close(sender, *, instance, **kwargs) -> None:
    access_end_on_commit(user_id=instance.user_id, key=str(instance.uid))


@receiver(post_save, sender=get_user_model(), dispatch_uid="workflows_sockets_of_inactive_user")
def sockets_of_inactive_user_close(sender, *, instance, **kwargs) -> None:
    if not instance.is_active:
        access_end_on_commit(user_id=instance.pk, key=None)


@receiver(user_logged_out, dispatch_uid="workflows_sockets_of_ended_session")
def sockets_of_ended_session_close(sender, *, request, user, **kwargs) -> None:
    """A logout (the live page's) closes the sockets opened with that session, not the user's others."""
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if user is not None and session_key:
        access_end_on_commit(user_id=user.pk, key=None, session=session_mark(session_key))


@receiver(conversation_busy, sender=Conversation, dispatch_uid="workflows_conversation_busy")
def conversation_busy_with_a_run(sender, *, conversation_id, **kwargs) -> bool:
    return conversation_has_run_in_progress(conversation_id=conversation_id)
