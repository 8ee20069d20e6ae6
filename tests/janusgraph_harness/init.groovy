// Binds the traversal sources requests name: `g`, and `g_ro` for operators' raw queries: read-only, any
// mutating step refused before it runs, and no way for the query to lift that guard. A plain
// `graph.traversal().withStrategies(ReadOnlyStrategy.instance())` is read-only only until the query says
// `g.withoutStrategies(ReadOnlyStrategy)`; this source refuses withoutStrategies, withStrategies (but
// options), withComputer and io on the server, as tests/gremlin_harness's ReadOnlyTraversalSource does.
// `graph` is bound by JanusGraphManager.
import org.apache.tinkerpop.gremlin.process.computer.Computer
import org.apache.tinkerpop.gremlin.process.computer.GraphComputer
import org.apache.tinkerpop.gremlin.process.traversal.TraversalStrategies
import org.apache.tinkerpop.gremlin.process.traversal.TraversalStrategy
import org.apache.tinkerpop.gremlin.process.traversal.dsl.graph.GraphTraversal
import org.apache.tinkerpop.gremlin.process.traversal.dsl.graph.GraphTraversalSource
import org.apache.tinkerpop.gremlin.process.traversal.strategy.decoration.OptionsStrategy
import org.apache.tinkerpop.gremlin.process.traversal.strategy.verification.ReadOnlyStrategy
import org.apache.tinkerpop.gremlin.structure.Graph

class ReadOnlyTraversalSource extends GraphTraversalSource {
    ReadOnlyTraversalSource(Graph graph, TraversalStrategies strategies) {
        super(graph, strategies.clone().addStrategies(ReadOnlyStrategy.instance()))
    }

    private static IllegalStateException refused(String what) {
        new IllegalStateException("read only: " + what + " is not allowed on the read-only traversal source " +
                "(ReadOnlyStrategy cannot be lifted)")
    }

    GraphTraversalSource withoutStrategies(Class<? extends TraversalStrategy>... classes) { throw refused("withoutStrategies") }

    GraphTraversalSource withStrategies(TraversalStrategy... strategies) {
        for (s in strategies) {
            if (!(s instanceof OptionsStrategy) && !(s instanceof ReadOnlyStrategy)) {
                throw refused("withStrategies(" + s.getClass().getSimpleName() + ")")
            }
        }
        super.withStrategies(strategies)
    }

    GraphTraversalSource withComputer() { throw refused("withComputer") }
    GraphTraversalSource withComputer(Computer computer) { throw refused("withComputer") }
    GraphTraversalSource withComputer(Class<? extends GraphComputer> c) { throw refused("withComputer") }
    def <S> GraphTraversal<S, S> io(String file) { throw refused("io") }
}

def globals = [:]
globals << [g : graph.traversal(),
            g_ro : new ReadOnlyTraversalSource(graph, graph.traversal().getStrategies())]
