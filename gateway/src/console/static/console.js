// The console's one script of its own (htmx aside). A page the browser
// brings back from its back/forward cache (Back after signing out, say) is
// asked for again, so it shows what the server says now: the login form
// once the session has ended, never the data the page held before.
addEventListener("pageshow", (event) => {
  if (event.persisted) {
    location.reload();
  }
});
