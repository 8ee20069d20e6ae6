package harness;

import org.apache.tinkerpop.gremlin.server.Settings;
import org.apache.tinkerpop.gremlin.server.util.DefaultGraphManager;
import org.apache.tinkerpop.gremlin.structure.Graph;

/**
 * The graph manager of a Gremlin Server without any Groovy: it binds the traversal sources the control plane
 * names, in Java, where a Groovy init script would otherwise do it. {@code g} over the graph named {@code graph},
 * and {@code g_ro} for operators' raw queries: a {@link ReadOnlyTraversalSource}, which no query can turn back
 * into a writing one.
 *
 * <p>Set {@code graphManager: harness.ControlPlaneGraphManager} in the server's YAML with this class on its
 * classpath (deploy/gremlin-server does, for the compose {@code gremlin} profile).
 */
public final class ControlPlaneGraphManager extends DefaultGraphManager {

    public ControlPlaneGraphManager(final Settings settings) {
        super(settings);
        final Graph graph = getGraph("graph");
        if (graph == null) {
            throw new IllegalStateException("the server's configuration names no graph called 'graph' (graphs: {graph: ...})");
        }
        putTraversalSource("g", graph.traversal());
        putTraversalSource("g_ro", new ReadOnlyTraversalSource(graph));
    }
}
