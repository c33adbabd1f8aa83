"""What a run reads through its hooks (workflows.recorder.ExecutionRecorder): the conversation before its turn
(the memory node), the owner's documents (retrieval), the prices its calls are charged at and its stored
prompts (a model node's `prompt`)."""
from __future__ import annotations

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from conversations.selectors import conversation_history, documents_search
from core.errors import ChatterError, RunError
from prompts.models import DEFAULT_LABEL
from prompts.services import prompt_resolve
from workflows.engine.runtime import FetchedPrompt
from workflows.models import WorkflowExecution
from workflows.pricing import price_for_call


class RunReads:
    """Mixed into ExecutionRecorder, whose state it reads (execution, user_message, the prices read so far, the
    prompts fetched so far)."""

    _prompts_drawn: dict

    def history(self, limit: int) -> list[BaseMessage]:
        execution = self.execution
        if execution.conversation_id is None:
            return []
        before = self.user_message.sequence if self.user_message is not None else None
        if before == 1:
            return []  # the turn's own message opened the conversation: there is nothing before it
        # without the message at hand, the turn's own message (if it has one) is where its history ends
        turn = execution.pk if before is None and execution.input_data.get("message") else None
        rows = conversation_history(conversation_id=execution.conversation_id, before_sequence=before,
                                    before_turn_of=turn, limit=limit)
        kinds = {"user": HumanMessage, "assistant": AIMessage, "system": SystemMessage}
        return [kinds[role](content) for role, content in rows]

    def documents(self, query: str, limit: int) -> list[dict]:
        return documents_search(owner_id=self.execution.owner_id, query=query, limit=limit)

    def price(self, provider: str, model: str):
        """Prices are read once per (provider, model) in a run: its calls are priced alike."""
        key = (provider, model)
        if key not in self._prices:
            self._prices[key] = price_for_call(provider=provider, model=model)
        return self._prices[key]

    def prompt(self, node, ref: dict, variables: dict) -> FetchedPrompt:
        """The node's stored prompt, the owner's, fetched now (a label moved since the last run is seen); a split
        label's draw is kept per conversation (prompts.services) and, within a run, per prompt and label. The
        node's calls record the version; the run records the first version it was given."""
        version = ref.get("version")
        key = (ref["name"], ref.get("label") or (None if version else DEFAULT_LABEL), version)
        drawn = self._prompts_drawn.get(key)
        if drawn is None:
            try:
                drawn = prompt_resolve(user=self.execution.owner_id, name=key[0], label=key[1], version=version,
                                       conversation_id=self.execution.conversation_id)
            except ChatterError as exc:
                raise RunError(exc.message, error_type="prompt_not_found") from None
            self._prompts_drawn[key] = drawn
        if self.open is not None:
            self.open.prompt_version_id = drawn.version.pk
        if self.execution.prompt_version_id is None:
            self.execution.prompt_version_id = drawn.version.pk
            WorkflowExecution.objects.filter(pk=self.execution.pk).update(prompt_version_id=drawn.version.pk)
        return FetchedPrompt(messages=drawn.messages(variables), config=drawn.config)
