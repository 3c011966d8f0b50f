/**
 * The one error type of the client: what the server refused, in its own words.
 *
 * `code` is the server's error code (`unauthorized`, `forbidden`, `bad_request`,
 * `invalid_event`, `token_revoked`, …) or, where the server sent none, one of the
 * client's: `policy` (a WebSocket closed with 1008), `http_<status>` (an answer
 * without the server's JSON error body). Retrying the same request would not help.
 */
export class SwarmfeedError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{status?: number, field?: string, index?: number}} [details]
   */
  constructor(code, message, details = {}) {
    super(`${code}: ${message}`);
    this.name = "SwarmfeedError";
    this.code = code;
    this.status = details.status;
    this.field = details.field;
    this.index = details.index;
  }
}

/**
 * Reads a refused answer's body as the server's `{"error": {code, message, field?,
 * index?}}` (DESIGN §4); a body of another shape still gives an error naming the status.
 *
 * @param {Response} response
 * @returns {Promise<SwarmfeedError>}
 */
export async function errorFromResponse(response) {
  let text = "";
  try {
    text = await response.text();
  } catch {
    // The body broke off: the status alone still says what was refused.
  }
  try {
    const { error } = JSON.parse(text);
    if (error && typeof error.code === "string") {
      return new SwarmfeedError(error.code, String(error.message ?? ""), {
        status: response.status,
        field: error.field,
        index: error.index,
      });
    }
  } catch {
    // Not the server's JSON (a proxy's page, say): fall through to the status.
  }
  const message = text.trim().slice(0, 200) || response.statusText || "refused";
  return new SwarmfeedError(`http_${response.status}`, message, { status: response.status });
}
