// GraphiQL against this API: queries over HTTP, subscriptions over graphql-transport-ws, the
// session's bearer token (see ../browser/js/auth.js) on both. URL parameters `query` and
// `variables` prefill the editors, as with strawberry's page.
import { authHeaders, connectionParams } from "/browser/static/browser/js/auth.js";

const url = new URL("/graphql", window.location.href).toString();
const subscriptionUrl = url.replace(/^http/, "ws");
const params = new URLSearchParams(window.location.search);

const fetcher = GraphiQL.createFetcher({
  url,
  subscriptionUrl,
  headers: authHeaders(),
  wsConnectionParams: connectionParams(),
});

const DEFAULT_QUERY = `# The control plane's GraphQL API (served offline by the API itself).
# Ctrl-Enter runs the operation; the graph browser is at /browser.
{
  nodes(first: 10) { edges { node { id status cpuFree memoryFree } } }
}
`;

function App() {
  const explorer = GraphiQLPluginExplorer.explorerPlugin();
  return React.createElement(GraphiQL, {
    fetcher,
    plugins: [explorer],
    defaultQuery: DEFAULT_QUERY,
    query: params.get("query") ?? undefined,
    variables: params.get("variables") ?? undefined,
    defaultEditorToolsVisibility: true,
    isHeadersEditorEnabled: true,
    inputValueDeprecation: true,
  });
}

ReactDOM.createRoot(document.getElementById("graphiql")).render(React.createElement(App));
