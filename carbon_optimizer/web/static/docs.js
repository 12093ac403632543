// Swagger UI over this service's OpenAPI document. A file of its own: the page's
// Content-Security-Policy allows no inline script.
"use strict";
window.addEventListener("DOMContentLoaded", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = window.SwaggerUIBundle({
    url: root.getAttribute("data-openapi-url"),
    domNode: root,
    deepLinking: true,
    // "Try it out" sends requests to this origin; Authorize takes the X-API-Key (the ApiKey
    // scheme) and adds it to every operation that declares it.
    tryItOutEnabled: true,
    displayRequestDuration: true,
    // No call to the public validator service: nothing leaves for another host.
    validatorUrl: null,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
});
