// Deletes every topic whose name starts with a prefix, in one JVM: the storefront tests' world
// (its five topics and those the graph creates: -progress, -checkpoints, -checkpoints-manifests).
//   java -cp '<kafka>/libs/*' DeleteTopics.java 127.0.0.1:9092 storefront-test-123-
// Prints "deleted N topics: ..."; refuses an empty prefix (it would name every topic).
import java.util.*;
import org.apache.kafka.clients.admin.*;

public class DeleteTopics {
    public static void main(String[] args) throws Exception {
        if (args.length != 2 || args[1].isEmpty()) {
            System.err.println("usage: DeleteTopics.java BOOTSTRAP PREFIX (non-empty)");
            System.exit(2);
        }
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        try (Admin admin = Admin.create(props)) {
            List<String> doomed = new ArrayList<>();
            for (String name : admin.listTopics().names().get())
                if (name.startsWith(args[1])) doomed.add(name);
            Collections.sort(doomed);
            if (!doomed.isEmpty()) admin.deleteTopics(doomed).all().get();
            System.out.println("deleted " + doomed.size() + " topics: " + String.join(", ", doomed));
        }
    }
}
