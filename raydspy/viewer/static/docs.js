// The HTTP service's API page (/docs, raydspy/service/docs.py): starts the vendored Swagger UI on
// the service's OpenAPI document. The page names that document's URL in a data attribute (it
// carries the route prefix Serve mounts the service under), so no inline script is needed and the
// Content-Security-Policy allows only scripts of the service's own origin.
(function () {
  "use strict";

  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    presets: [SwaggerUIBundle.presets.apis],
    // Swagger UI's default sends the document's URL to validator.swagger.io (a badge image from
    // there): no request leaves the service's origin.
    validatorUrl: null,
  });
})();
