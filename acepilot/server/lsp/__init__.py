"""The Acepilot language server: ghost-text completions over LSP.

The completion pipeline (pipeline.py; docs/lsp.md draws it), one module per stage:

    snapshot     1. the lines around the cursor, copied and bounded by the budget
    trigger      2. typing-ahead answers at once; else single/multi-line and when to stop
    context      3. snippets from the other open documents
    prompt       3. header + snippets + prefix (+ FIM suffix, acepilot/server/fim.py) to a budget
    cache        4. the LRU of model outputs (and typing-ahead's memory)
    backends/    4. base (Request/Result/Ticket), local engine, remote HTTP (streamed)
    postprocess  5. single- vs multi-line, cut at the end of the block, suffix overlap
    reply        6. the LSP items

Around it:

    session      one editor session's state: documents, settings, backend and its swaps
    documents    open documents, incremental edits, positions in UTF-16/UTF-8/UTF-32
    languages    comment syntax and block style per language id
    config       the settings, validated (they come from the client: untrusted)
    stats        `acepilot/stats` counters; acceptance telemetry and its forwarding
    server       the pygls handlers (`acepilot serve`); rpc: JSON-RPC lifecycle rules
    transport    bounded framing over stdio and TCP
    headless     the pipeline without an editor (`acepilot complete`, `acepilot demo`)
    logs         logging that never writes document text at the default level

Nothing here imports torch, transformers or training.
"""
