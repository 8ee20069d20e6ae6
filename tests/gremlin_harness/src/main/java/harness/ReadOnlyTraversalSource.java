package harness;

import org.apache.tinkerpop.gremlin.process.computer.Computer;
import org.apache.tinkerpop.gremlin.process.computer.GraphComputer;
import org.apache.tinkerpop.gremlin.process.traversal.TraversalStrategies;
import org.apache.tinkerpop.gremlin.process.traversal.TraversalStrategy;
import org.apache.tinkerpop.gremlin.process.traversal.dsl.graph.GraphTraversal;
import org.apache.tinkerpop.gremlin.process.traversal.dsl.graph.GraphTraversalSource;
import org.apache.tinkerpop.gremlin.process.traversal.strategy.decoration.OptionsStrategy;
import org.apache.tinkerpop.gremlin.process.traversal.strategy.verification.ReadOnlyStrategy;
import org.apache.tinkerpop.gremlin.structure.Graph;

/**
 * The traversal source of operators' raw queries ({@code g_ro}): {@link ReadOnlyStrategy}, and no way for the
 * query to lift it.
 *
 * <p>A plain {@code graph.traversal().withStrategies(ReadOnlyStrategy.instance())} is read-only only until the
 * query says {@code g.withoutStrategies(ReadOnlyStrategy)}: the source methods are the client's to call, in
 * gremlin-lang text as in bytecode. Here they are refused on the server, before anything runs:
 * {@code withoutStrategies} (removing the guard), {@code withStrategies} of anything but options (what
 * {@code with(k, v)} adds), {@code withComputer} (OLAP vertex programs write their results into the graph), and
 * {@code io} (reads files into the graph or writes them on the server). Mutating steps anywhere in the traversal,
 * child traversals included, are refused by ReadOnlyStrategy itself.
 *
 * <p>Deployments on another Gremlin Server bind it the same way: {@code new harness.ReadOnlyTraversalSource(graph)}.
 */
public final class ReadOnlyTraversalSource extends GraphTraversalSource {

    public ReadOnlyTraversalSource(final Graph graph) {
        super(graph, TraversalStrategies.GlobalCache.getStrategies(graph.getClass()).clone()
                .addStrategies(ReadOnlyStrategy.instance()));
    }

    private static IllegalStateException refused(final String what) {
        return new IllegalStateException("read only: " + what + " is not allowed on the read-only traversal source "
                + "(ReadOnlyStrategy cannot be lifted)");
    }

    @Override
    @SuppressWarnings("unchecked")
    public GraphTraversalSource withoutStrategies(final Class<? extends TraversalStrategy>... traversalStrategyClasses) {
        throw refused("withoutStrategies");
    }

    @Override
    public GraphTraversalSource withStrategies(final TraversalStrategy... traversalStrategies) {
        for (final TraversalStrategy<?> s : traversalStrategies) {
            if (!(s instanceof OptionsStrategy) && !(s instanceof ReadOnlyStrategy)) {
                throw refused("withStrategies(" + s.getClass().getSimpleName() + ")");
            }
        }
        return super.withStrategies(traversalStrategies);
    }

    @Override
    public GraphTraversalSource withComputer() {
        throw refused("withComputer");
    }

    @Override
    public GraphTraversalSource withComputer(final Computer computer) {
        throw refused("withComputer");
    }

    @Override
    public GraphTraversalSource withComputer(final Class<? extends GraphComputer> graphComputerClass) {
        throw refused("withComputer");
    }

    @Override
    public <S> GraphTraversal<S, S> io(final String file) {
        throw refused("io");
    }
}
