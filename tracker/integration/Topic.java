// A topic for one integration run, in one JVM: creates it (args: BOOTSTRAP NAME PARTITIONS),
// prints "created", waits for stdin to close, deletes it, prints "deleted".
//   java -cp '<kafka>/libs/*' Topic.java 127.0.0.1:9092 tracker-it-123 2
import java.util.*;
import org.apache.kafka.clients.admin.*;

public class Topic {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        try (Admin admin = Admin.create(props)) {
            // LogAppendTime, as shopper-events (scripts/stack): the broker stamps messages.
            NewTopic topic = new NewTopic(args[1], Integer.parseInt(args[2]), (short) 1)
                .configs(Map.of("message.timestamp.type", "LogAppendTime"));
            admin.createTopics(List.of(topic)).all().get();
            System.out.println("created");
            System.out.flush();
            while (System.in.read() != -1) { }
            admin.deleteTopics(List.of(args[1])).all().get();
            System.out.println("deleted");
        }
    }
}
