// Starts Swagger UI on /api/docs with the app's own OpenAPI document (a file, not inline code: the page's
// Content-Security-Policy allows scripts from this origin only).
/* global SwaggerUIBundle */
window.addEventListener("DOMContentLoaded", () => {
  window.ui = SwaggerUIBundle({
    url: new URL("openapi.json", document.baseURI).toString(),
    dom_id: "#swagger-ui",
    deepLinking: true,
    docExpansion: "list",
    tryItOutEnabled: false,
    validatorUrl: null, // the public validator badge would call out to the internet
    layout: "BaseLayout",
    presets: [SwaggerUIBundle.presets.apis],
  });
});
