"""What a run reads through its hooks: the conversation before its turn (the memory node), the owner's documents
and knowledge collections (retrieval), the prices its calls are charged at and its stored prompts (a model node's
`prompt`). One RunReads per run, handed to its recorder (workflows.recorder), which answers the engine's reading
hooks with it."""
from __future__ import annotations

from decimal import Decimal

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from conversations.selectors import conversation_history, documents_search
from core.errors import ChatterError, RunError
from engine.hooks import Embed, FetchedPrompt, Rerank, RetrievalRequest
from prompts.models import DEFAULT_LABEL
from prompts.services import prompt_resolve
from workflows.knowledge_search import collections_search
from workflows.models import WorkflowExecution
from workflows.pricing import TOOL_PRICES, price_for_call, tool_price_for_call


class RunReads:
    def __init__(self, execution, *, user_message=None, prices: dict | None = None):
        """`user_message`: the turn's own message, where its history ends (a resumed run's is read back from its
        ledger and set here). `prices`: (provider, model) → price already read for this run."""
        self.execution = execution
        self.user_message = user_message
        self._prices: dict[tuple[str, str], object] = dict(prices or {})
        self._prompts: dict[tuple, object] = {}  # (name, label, version) → the stored prompt version drawn

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

    def collections_search(self, request: RetrievalRequest, embed: Embed, rerank: Rerank) -> list[dict]:
        """The owner's search of knowledge collections (workflows.knowledge_search); what refuses it (a collection
        the owner cannot see, a bad filter) ends the run with its code as the error type."""
        try:
            return collections_search(user=self.execution.owner, request=request, embed=embed, rerank=rerank)
        except RunError:
            raise  # the query's embedding or the rerank failed, or a limit or budget stopped it
        except ChatterError as exc:
            raise RunError(exc.message, error_type=exc.code) from None

    def price(self, provider: str, model: str):
        """Prices are read once per (provider, model) in a run: its calls are priced alike."""
        key = (provider, model)
        if key not in self._prices:
            self._prices[key] = price_for_call(provider=provider, model=model)
        return self._prices[key]

    def tool_price(self, tool: str) -> Decimal:
        """An MCP tool's price per call, read once per tool in a run: its calls are priced alike."""
        key = (TOOL_PRICES, tool)
        if key not in self._prices:
            self._prices[key] = tool_price_for_call(tool=tool)
        return self._prices[key]

    def prompt(self, ref: dict):
        """The owner's stored prompt a node names, fetched now (a label moved since the last run is seen); a split
        label's draw is kept per conversation (prompts.services) and, within a run, per prompt and label."""
        version = ref.get("version")
        key = (ref["name"], ref.get("label") or (None if version else DEFAULT_LABEL), version)
        drawn = self._prompts.get(key)
        if drawn is None:
            try:
                drawn = prompt_resolve(user=self.execution.owner_id, name=key[0], label=key[1], version=version,
                                       conversation_id=self.execution.conversation_id)
            except ChatterError as exc:
                raise RunError(exc.message, error_type="prompt_not_found") from None
            self._prompts[key] = drawn
        return drawn


class ReadHooks:
    """The reading RunHooks of ExecutionRecorder (which mixes ReadHooks in), answered by its RunReads (`reads`); a
    stored prompt's version is recorded on the node open (`open`) and, the first, on the run."""

    def history(self, limit: int) -> list:
        return self.reads.history(limit)

    def documents(self, query: str, limit: int) -> list[dict]:
        return self.reads.documents(query, limit)

    def collections_search(self, request, embed, rerank) -> list[dict]:
        return self.reads.collections_search(request, embed, rerank)

    def price(self, provider: str, model: str):
        return self.reads.price(provider, model)

    def prompt(self, node, ref: dict, variables: dict) -> FetchedPrompt:
        """The node's stored prompt (RunReads.prompt). The node's calls record its version; the run records the
        first version it was given."""
        version_id = (drawn := self.reads.prompt(ref)).version.pk
        if self.open is not None:
            self.open.prompt_version_id = version_id
        if self.execution.prompt_version_id is None:
            self.execution.prompt_version_id = version_id
            WorkflowExecution.objects.filter(pk=self.execution.pk).update(prompt_version_id=version_id)
        return FetchedPrompt(messages=drawn.messages(variables), config=drawn.config)
