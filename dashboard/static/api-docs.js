// A deployment's API docs: Swagger UI (served by Lynx from django-ninja's static files, no CDN) over the
// swagger.json that Lynx reads from the deployment. The spec is fetched here first, so that a refusal shows
// Lynx's own message instead of Swagger UI's "Failed to load API definition".
(function () {
  "use strict";

  function fail(text) {
    const problem = document.getElementById("api-docs-error");
    problem.textContent = text;
    problem.hidden = false;
  }

  document.addEventListener("DOMContentLoaded", async function () {
    const root = document.getElementById("swagger-ui");
    let response;
    let body;
    try {
      response = await fetch(root.dataset.specUrl, { headers: { Accept: "application/json" } });
      body = await response.json();
    } catch (e) {
      fail("Lynx could not read the API description: " + e.message);
      return;
    }
    if (!response.ok) {
      fail(body.message || "Lynx could not read the API description (" + response.status + ").");
      return;
    }
    window.SwaggerUIBundle({
      spec: body,
      domNode: root,
      presets: [window.SwaggerUIBundle.presets.apis],
      // The endpoint sends no CORS headers and the key stays out of the page: requests go through the samples.
      supportedSubmitMethods: [],
      deepLinking: false,
    });
  });
})();
