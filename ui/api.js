// Calls to the box's REST API, with the access token kept in sessionStorage
// so that it is dropped when the browser tab closes.

const TOKEN_KEY = "realcast.accessToken";

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(token) {
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
  } else {
    sessionStorage.removeItem(TOKEN_KEY);
  }
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// Plain-words lead-ins for the API's error statuses; the API's own detail
// follows, because it names the field or the value that failed.
const STATUS_TEXT = {
  400: "The box rejected the input",
  401: "Not signed in, or the email or password is wrong",
  403: "This account is not allowed to do that",
  404: "Not found (it may have been deleted)",
  409: "Conflict",
  413: "The request is too large",
  429: "Too many requests; wait a minute and try again",
  500: "The box failed to do that; its log has the cause",
};

function describeError(status, detail) {
  const lead = STATUS_TEXT[status] || `The box returned HTTP ${status}`;
  return detail ? `${lead}: ${detail}.` : `${lead}.`;
}

// Sends one request and returns the parsed JSON body (null for 204).
// Raises ApiError with a message a person can read.
export async function request(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;

  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "The box did not respond. Check that it is running and that this computer can reach it.");
  }
  if (response.status === 204) return null;

  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    if (response.status === 401 && token) {
      setToken(null);
      window.dispatchEvent(new Event("realcast:signed-out"));
    }
    const detail = data && typeof data.detail === "string" ? data.detail : "";
    throw new ApiError(response.status, describeError(response.status, detail));
  }
  return data;
}
