package harness;

import java.util.List;
import org.apache.commons.configuration2.Configuration;
import org.apache.commons.configuration2.builder.fluent.Configurations;
import org.apache.tinkerpop.gremlin.groovy.jsr223.dsl.credential.CredentialTraversalSource;
import org.apache.tinkerpop.gremlin.structure.Graph;
import org.apache.tinkerpop.gremlin.structure.util.GraphFactory;

/**
 * Writes the credentials graph of Gremlin Server's SimpleAuthenticator: exactly one user, whose password (kept as a
 * BCrypt hash) comes from the environment variable GREMLIN_PASSWORD, never from the command line.
 *
 * <p>Usage: {@code GREMLIN_PASSWORD=... java -cp 'lib/*' harness.CredentialsFile credentials.properties USER}, where
 * the properties describe a TinkerGraph persisted to a file ({@code gremlin.tinkergraph.graphLocation}, graphson): the
 * same file the authenticator's {@code credentialsDb} names. Every other user is removed, so changing the password
 * and starting the server again rotates it.
 */
public final class CredentialsFile {
    private CredentialsFile() {}

    public static void main(final String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: GREMLIN_PASSWORD=... CredentialsFile <credentials.properties> <user>");
            System.exit(2);
        }
        final String password = System.getenv("GREMLIN_PASSWORD");
        if (password == null || password.isEmpty()) {
            System.err.println("GREMLIN_PASSWORD is not set: the Gremlin Server has no default password");
            System.exit(2);
        }
        final Configuration config = new Configurations().properties(args[0]);
        final Graph graph = GraphFactory.open(config);
        try {
            final CredentialTraversalSource credentials = graph.traversal(CredentialTraversalSource.class);
            final List<Object> others = credentials.users().values("username").toList();
            for (final Object name : others) {
                credentials.users(name.toString()).drop().iterate();
            }
            credentials.user(args[1], password).iterate();
        } finally {
            graph.close(); // TinkerGraph writes graphLocation on close
        }
        System.err.println("credentials: user " + args[1] + " written to " + config.getString("gremlin.tinkergraph.graphLocation"));
    }
}
