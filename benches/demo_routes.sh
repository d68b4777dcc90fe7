# Sourced by the load scripts: the demo's routes.toml rewritten for a bench
# run, so every script measures the configuration the demo ships.
#
#   demo_routes GW_PORT UP_PORT [ACCESS_LOG] > file.toml
#
# The gateway listens on 127.0.0.1:GW_PORT and calls the demo's Bookstore on
# UP_PORT; proto and secret paths become absolute (the file is written
# elsewhere); the access log is off unless ACCESS_LOG is true, and the admin
# listener is dropped (a bench does not need it). Run from the checkout's root.
demo_routes() {
  sed -e "s|^listen = .*|listen = \"127.0.0.1:$1\"|" \
      -e "s|http://127.0.0.1:50051|http://127.0.0.1:$2|" \
      -e "s|^include = .*|include = [\"$PWD/proto\"]|" \
      -e "s|^secret_file = \"|secret_file = \"$PWD/|" \
      -e "s|^\[server\]|[server]\naccess_log = ${3:-false}|" \
      -e '/^\[admin\]/,/^listen/d' routes.toml
}
