// Saved queries in each engine's own language, the user's own saved ones, and the history of what
// ran (localStorage, per language). `$id` in a saved query stands for the selected vertex's id: the
// page puts it in as a quoted string literal before sending the text (the raw path takes no
// parameters; the engine still runs it read-only).
const BUILT_IN = {
  cypher: [
    ["Nodes", "MATCH (n:Node) RETURN n"],
    ["Nodes and their neighbours (rtt)", "MATCH (n:Node) OPTIONAL MATCH (n)-[l:NEIGHBOR_OF]->(m:Node) RETURN n, l, m"],
    ["Descendants of $id", "MATCH (x:Actor {id: $id})-[:PARENT_OF*0..9]->(p)-[r:PARENT_OF]->(a:Allocation)\nRETURN x, p, r, a LIMIT 5000"],
    ["Allocations holding an A100 on nodes within 20 ms of $id",
      "MATCH p = (n:Node {id: $id})-[l:NEIGHBOR_OF]->(m:Node)<-[:RUNS_ON]-(a:Allocation)-[:CLAIMS]->(g:Gpu {model: 'A100'})\nWHERE l.rtt_ms <= 20\nRETURN p"],
    ["Path from job $id's root to its failed tasks",
      "MATCH p = (root:Allocation {root_of: $id})-[:PARENT_OF*1..10]->(a:Allocation {state: 'failed'})\nRETURN p"],
    ["The whole hierarchy", "MATCH (p:Actor)-[r:PARENT_OF]->(a:Allocation) RETURN p, r, a LIMIT 5000"],
    ["Failed allocations", "MATCH (a:Allocation {state: 'failed'}) RETURN a.id, a.name, a.exit_code, a.error, a LIMIT 200"],
    ["Jobs and their tasks", "MATCH (j:Job) OPTIONAL MATCH (j)-[r:HAS_TASK]->(t:Task) RETURN j, r, t"],
  ],
  gremlin: [
    ["Nodes", "g.V().hasLabel('Node')"],
    ["Nodes and their neighbours (rtt)", "g.V().hasLabel('Node').union(identity(), outE('NEIGHBOR_OF'))"],
    ["Descendants of $id",
      "g.V($id).union(identity(), repeat(out('PARENT_OF')).emit().times(10).union(identity(), inE('PARENT_OF'))).limit(5000)"],
    ["Allocations holding an A100 on nodes within 20 ms of $id",
      "g.V($id).outE('NEIGHBOR_OF').has('rtt_ms', lte(20)).inV().inE('RUNS_ON').outV()\n .outE('CLAIMS').inV().has('model', 'A100').path()"],
    ["Path from job $id's root to its failed tasks",
      "g.V().has('Allocation', 'root_of', $id).repeat(outE('PARENT_OF').inV()).until(has('state', 'failed')).path()"],
    ["The whole hierarchy", "g.E().hasLabel('PARENT_OF').limit(5000).union(outV(), identity(), inV())"],
    ["Failed allocations", "g.V().has('Allocation', 'state', 'failed').limit(200)"],
    ["Jobs and their tasks", "g.V().hasLabel('Job').union(identity(), outE('HAS_TASK').union(identity(), inV()))"],
  ],
};
const HISTORY_MAX = 50;

function load(key) {
  try {
    return JSON.parse(localStorage.getItem(key) ?? "[]");
  } catch {
    return [];
  }
}

export class Queries {
  constructor(language) {
    this.language = language;
    this.historyKey = `controlplane.history.${language}`;
    this.savedKey = `controlplane.saved.${language}`;
  }

  builtIn() { return BUILT_IN[this.language] ?? BUILT_IN.cypher; }
  defaultQuery() { return this.builtIn()[0][1]; }
  saved() { return load(this.savedKey); }
  history() { return load(this.historyKey); }

  save(name, q) {
    const list = this.saved().filter((s) => s.name !== name);
    list.unshift({ name, q });
    localStorage.setItem(this.savedKey, JSON.stringify(list));
  }

  forget(name) {
    localStorage.setItem(this.savedKey, JSON.stringify(this.saved().filter((s) => s.name !== name)));
  }

  remember(q, outcome) {
    const list = this.history().filter((h) => h.q !== q);
    list.unshift({ q, at: Date.now(), outcome });
    localStorage.setItem(this.historyKey, JSON.stringify(list.slice(0, HISTORY_MAX)));
  }
}

/** The text with `$id` replaced by `id` as a string literal; null id with a `$id` in it: an error for the user. */
export function fill(q, id) {
  if (!/\$id\b/.test(q)) return q;
  if (id === null || id === undefined) throw new Error("select a vertex first: its id replaces $id in this query");
  const literal = `'${String(id).replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`;
  return q.replace(/\$id\b/g, literal);
}
