// Binds the traversal sources requests name: `g`, and `g_ro` (read-only: any mutating step is
// refused before it runs) for operators' raw queries. `graph` is bound by JanusGraphManager.
def globals = [:]
globals << [g : graph.traversal(),
            g_ro : graph.traversal().withStrategies(org.apache.tinkerpop.gremlin.process.traversal.strategy.verification.ReadOnlyStrategy.instance())]
