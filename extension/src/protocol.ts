/**
 * Acepilot's wire names, as acepilot/server/protocol.py declares them.
 *
 * tests/extension/test_protocol_constants.py checks that every constant here
 * equals the server's, and that no other file of extension/src spells an
 * `acepilot/...` method itself.
 */

/** server -> client notification: state, model, latencies. */
export const STATUS = "acepilot/status";
/** server -> client notification: send the full text of {uri}. */
export const RESYNC = "acepilot/resync";
/** client -> server request: the counters. */
export const STATS = "acepilot/stats";
/** client -> server notification: a completion was shown/accepted/rejected. */
export const TELEMETRY = "acepilot/telemetry";
/** The command every inline completion item carries (run on accept). */
export const ACCEPTED_COMMAND = "acepilot.accepted";
/** The settings section. */
export const SECTION = "acepilot";
