"""What a run reads through its hooks (workflows.recorder.ExecutionRecorder): the conversation before its turn
(the memory node), the owner's documents (retrieval) and the prices its calls are charged at."""
from __future__ import annotations

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from conversations.selectors import conversation_history, documents_search
from workflows.pricing import price_for_call


class RunReads:
    """Mixed into ExecutionRecorder, whose state it reads (execution, user_message, the prices read so far)."""

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
