"""The Acepilot language server: ghost-text completions over LSP.

One module per stage of a completion (see docs/lsp.md):

    documents    open documents, incremental edits, positions in UTF-16/UTF-8/UTF-32
    languages    comment syntax and block style per language id
    config       the settings, validated (they come from the client: untrusted)
    prompt       header + neighbouring-tab snippets + prefix (+ FIM suffix) to a budget
    postprocess  single- vs multi-line, cut at the end of the block, suffix overlap
    cache        typing-ahead and the LRU cache of model outputs
    backends     local engine (onnxruntime, off the event loop) or remote HTTP (streamed)
    stats        `acepilot/stats` counters; acceptance telemetry and its forwarding
    logs         logging that never writes document text at the default level
    server       the pygls server wiring these together (`acepilot serve`)

Nothing here imports torch, transformers or training.
"""
