"""Repository-aware context for completions: a workspace index and the sources that read it.

    index = WorkspaceIndex(root, IndexLimits())
    index.start()                                   # background, low priority
    collector = ContextCollector(index, RecentChunks())
    chunks = collector.collect(text, offset, rel_path, language_id, budget_tokens, count_tokens)

See docs/context.md for the sources, the budget and the recall benchmark.
"""

from acepilot.server.context.chunks import KINDS, ContextChunk
from acepilot.server.context.collector import ContextCollector
from acepilot.server.context.index import WorkspaceIndex
from acepilot.server.context.recent import RecentChunks
from acepilot.server.context.workspace import IndexLimits

__all__ = [
    "KINDS",
    "ContextChunk",
    "ContextCollector",
    "IndexLimits",
    "RecentChunks",
    "WorkspaceIndex",
]
