// Swagger UI on this API's own /openapi.json. validatorUrl null: the page never calls out to
// swagger.io's validator (no address but this API's is reached).
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis],
  deepLinking: true,
  validatorUrl: null,
});
