"""pygls' protocol, made strict but answering: the LSP lifecycle, bad params, error replies.

- Documents go to Acepilot's own store (the session), never to pygls' workspace.
- A request with invalid params is answered with InvalidParams (pygls only logged it).
- Before `initialize`, requests get ServerNotInitialized and notifications are
  dropped; after `shutdown`, requests get InvalidRequest; `exit` ends the
  session with status 0 after `shutdown`, else 1 (the specification).
- Internal errors reach the client without pygls' traceback (file paths of the
  server) in `data`: the message names the exception type, the log has the rest.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method

if TYPE_CHECKING:
    from acepilot.server.lsp.server import AcepilotServer

log = logging.getLogger(__name__)
INTERNAL_ERROR = -32603


class Rejected:
    """A message that could not be read; already answered (requests) or dropped."""

    jsonrpc = "invalid"


class AcepilotProtocol(LanguageServerProtocol):
    """pygls' protocol with Acepilot's document store and strict-but-answering parsing."""

    _server: AcepilotServer
    _initialize_seen = False

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams) -> None:
        self._server.did_open(params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams) -> None:
        self._server.did_change(params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams) -> None:
        self._server.did_close(params)

    def structure_message(self, data: dict[str, Any]) -> Any:
        try:
            return super().structure_message(data)
        except Exception as exc:
            if "id" in data and "method" in data:
                # pygls would only log this: the client would wait for ever.
                error = types.ResponseError(
                    code=types.ErrorCodes.InvalidParams,
                    message=f"invalid params for {str(data.get('method'))[:80]} ({type(exc.__cause__ or exc).__name__})",
                )
                self._send_response(data["id"], error=error)
            log.warning("dropped a malformed %s message", str(data.get("method", "response"))[:80])
            return Rejected()

    def handle_message(self, message: Any) -> None:
        """The lifecycle rules of the specification, then pygls' dispatch."""
        if isinstance(message, Rejected):
            return
        method = getattr(message, "method", None)
        msg_id = getattr(message, "id", None)
        is_request = method is not None and msg_id is not None
        if method == types.INITIALIZE:
            self._initialize_seen = True
        elif method is not None and method != types.EXIT and not self._initialize_seen:
            if is_request:
                self._refuse(msg_id, types.ErrorCodes.ServerNotInitialized, "not initialized")
            return  # notifications before initialize are dropped (exit excepted)
        if self._shutdown and method is not None and method != types.EXIT:
            if is_request:
                self._refuse(msg_id, types.ErrorCodes.InvalidRequest, "the server is shut down")
            return
        super().handle_message(message)

    def _refuse(self, msg_id: Any, code: types.ErrorCodes, message: str) -> None:
        self._send_response(msg_id, error=types.ResponseError(code=code, message=message))

    def _send_response(
        self, msg_id: Any, result: Any = None, error: types.ResponseError | None = None
    ) -> None:
        """Errors reach the client without tracebacks or file paths (pygls puts them in `data`)."""
        if error is not None and error.data is not None and error.code == INTERNAL_ERROR:
            kind = str(error.message).split(":", 1)[0].strip()[:60]
            log.warning(
                "request %s failed: %s", str(msg_id)[:40], kind
            )  # the message may quote code
            error = types.ResponseError(
                code=error.code, message=f"internal error ({kind}); see the server log"
            )
        super()._send_response(msg_id, result, error)

    @lsp_method(types.EXIT)
    def lsp_exit(self, *args: Any) -> None:  # type: ignore[override]  # no sys.exit here
        """Ends the session: status 0 after `shutdown`, else 1 (the specification)."""
        self._server.exit_code = 0 if self._shutdown else 1
        self._server.ended.set()
