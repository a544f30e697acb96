// Swagger UI on this API's own /openapi.json. The page is public but the document is not: the
// page reads it with the user's token (asked for on a 401, kept in sessionStorage under the
// dashboard's key, so this tab only) and hands Swagger UI the document itself, since Swagger
// UI's own fetch of `url` cannot carry a header. validatorUrl null: the page never calls out
// to swagger.io's validator (no address but this API's is reached).
const TOKEN_KEY = "freight.token";
const SCHEME = "bearer"; // components.securitySchemes in freight_server/services/api/openapi.py

function authorization(token) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function loadSpec() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const answer = await fetch("/openapi.json", { headers: authorization(token) });
  if (answer.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    askForToken(token ? "The API refused this token." : "");
    return;
  }
  if (!answer.ok) {
    askForToken(`/openapi.json answered HTTP ${answer.status}.`);
    return;
  }
  showDocs(await answer.json(), token);
}

function askForToken(message) {
  const form = document.getElementById("token-form");
  document.getElementById("token-error").textContent = message;
  form.hidden = false;
  form.querySelector("input").focus();
}

function showDocs(spec, token) {
  document.getElementById("token-form").hidden = true;
  window.ui = SwaggerUIBundle({
    spec,
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis],
    deepLinking: true,
    validatorUrl: null,
    // A token entered in Authorize wins; else the one the page was opened with.
    requestInterceptor: (request) => {
      if (token && !request.headers.Authorization) {
        request.headers.Authorization = `Bearer ${token}`;
      }
      return request;
    },
    // Shown as authorized, so "Try it out" on a secured operation sends it too.
    onComplete: () => {
      if (token) window.ui.preauthorizeApiKey(SCHEME, token);
    },
  });
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = new FormData(event.target).get("token").trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  loadSpec();
});

loadSpec();
