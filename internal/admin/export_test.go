package admin

// ParseQuery exposes parseQuery to the tests.
var ParseQuery = parseQuery
