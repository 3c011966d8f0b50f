/**
 * The server's base URL (`http://host:port`, optionally with a path prefix under which
 * a proxy serves swarmfeed) joined with an endpoint's path.
 *
 * @param {string | URL} base
 * @param {string} path an absolute endpoint path such as `/ws`
 * @returns {URL}
 */
export function endpoint(base, path) {
  const url = URL.canParse(base) ? new URL(base) : null;
  if (url === null || (url.protocol !== "http:" && url.protocol !== "https:")) {
    throw new TypeError(`url must be http://host[:port] or https://host[:port], not ${JSON.stringify(String(base))}`);
  }
  url.pathname = url.pathname.replace(/\/+$/, "") + path;
  url.search = "";
  url.hash = "";
  return url;
}

/**
 * The headers that carry a token, or none (a browser then sends its session cookie).
 *
 * @param {string | undefined} token
 * @returns {Record<string, string>}
 */
export function authorization(token) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}
